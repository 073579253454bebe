"""Interaction loaders for the input formats of SPEC section 3: `ratings_final.txt` (TaNP/KGCN),
raw HetRec `user_artists.dat` (with the KGCN item mapping: the same 3,846 items with HetRec ids),
median-play HetRec, and a generic `user,item,rating` CSV/TSV with a header. Malformed input
raises `DataError` naming the file and line. Knows nothing about episodes.
"""

from __future__ import annotations

import csv
import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Literal

import numpy as np

from tanp.digest import sha256_hex
from tanp.labels import liked_threshold

DataFormat = Literal["auto", "ratings", "hetrec", "hetrec-median", "generic"]
RATINGS_FILE = "ratings_final.txt"
HETREC_INTERACTIONS = "user_artists.dat"
KG_ITEM_INDEX = "item_index2entity_id.txt"
ARTISTS_FILE = "artists.dat"
TAGGED_FILE = "user_taggedartists.dat"
KGCN_NEGATIVE_SEED = 555


class DataError(Exception):
    """An input file that is missing or malformed; the message names the file and line."""


@dataclass(frozen=True)
class TagAssignments:
    """(user, item, tag) rows: a user put a tag on an item (HetRec user_taggedartists.dat).

    users/items index the Interactions' user_ids/item_ids; tags index 0..count-1. Item content
    for the model is built from the train users' rows only (training.item_stats)."""

    users: np.ndarray
    items: np.ndarray
    tags: np.ndarray
    count: int


@dataclass(frozen=True)
class Interactions:
    """All (user, item, label) rows with dense internal indices.

    users/items index `user_ids`/`item_ids` (external ids, strings); rows keep file order.
    item_names/item_urls come from artists.dat when present; tags from user_taggedartists.dat.
    """

    user_ids: list[str]
    item_ids: list[str]
    users: np.ndarray
    items: np.ndarray
    labels: np.ndarray
    item_names: list[str] | None
    source: dict[str, object] = field(default_factory=dict)
    item_urls: list[str] | None = None
    tags: TagAssignments | None = None

    @property
    def label_min(self) -> float:
        return float(self.labels.min()) if self.labels.size else 0.0

    @property
    def label_max(self) -> float:
        return float(self.labels.max()) if self.labels.size else 1.0

    @property
    def positive_threshold(self) -> float:
        """Labels at or above this are positives (relevant): tanp's one rule for liked."""
        return liked_threshold(self.label_min, self.label_max)

    def by_user(self) -> list[np.ndarray]:
        """Row indices of each user, in file order."""
        order = np.argsort(self.users, kind="stable")
        bounds = np.searchsorted(self.users[order], np.arange(len(self.user_ids) + 1))
        return [order[bounds[user] : bounds[user + 1]] for user in range(len(self.user_ids))]


def fingerprint(paths: list[Path]) -> str:
    """One sha256 over the named files' digests (order-independent)."""
    digest = hashlib.sha256()
    for line in sorted(f"{path.name}:{sha256_hex(path)}" for path in paths):
        digest.update(line.encode())
    return digest.hexdigest()


def _require(path: Path) -> Path:
    if not path.is_file():
        raise DataError(f"{path}: file not found")
    return path


def _read_rows(
    path: Path, *, columns: int, header: bool, encoding: str = "utf-8"
) -> list[list[str]]:
    rows: list[list[str]] = []
    try:
        with _require(path).open(encoding=encoding, newline="") as handle:
            for number, line in enumerate(handle, start=1):
                if header and number == 1:
                    continue
                line = line.rstrip("\r\n")
                if not line.strip():
                    continue
                parts = line.split("\t")
                if len(parts) < columns:
                    raise DataError(
                        f"{path}:{number}: expected {columns} tab-separated columns, "
                        f"got {len(parts)}"
                    )
                rows.append(parts)
    except UnicodeDecodeError as error:
        raise DataError(f"{path}: not {encoding} text ({error.reason})") from error
    return rows


def _int(value: str, *, path: Path, line: int, column: str) -> int:
    try:
        return int(value)
    except ValueError as error:
        raise DataError(f"{path}:{line}: {column} {value!r} is not an integer") from error


def _float(value: str, *, path: Path, line: int, column: str) -> float:
    try:
        number = float(value)
    except ValueError as error:
        raise DataError(f"{path}:{line}: {column} {value!r} is not a number") from error
    if not np.isfinite(number):
        raise DataError(f"{path}:{line}: {column} {value!r} is not finite")
    return number


def _dense(values: list[str], *, numeric: bool) -> tuple[list[str], np.ndarray]:
    unique = sorted(set(values), key=(lambda text: (len(text), text)) if numeric else None)
    position = {value: index for index, value in enumerate(unique)}
    return unique, np.fromiter(
        (position[value] for value in values), dtype=np.int64, count=len(values)
    )


def _interactions(
    users: list[str], items: list[str], labels: list[float], *, source: dict[str, object]
) -> Interactions:
    """Rows of external ids -> Interactions with dense indices (numeric ids in numeric order)."""
    user_ids, user_index = _dense(users, numeric=all(value.isdigit() for value in users))
    item_ids, item_index = _dense(items, numeric=all(value.isdigit() for value in items))
    return Interactions(
        user_ids=user_ids,
        item_ids=item_ids,
        users=user_index,
        items=item_index,
        labels=np.asarray(labels, dtype=np.float32),
        item_names=None,
        source=source,
    )


def load_artist_names(directory: Path) -> dict[str, str]:
    """HetRec artistID -> name from artists.dat (empty when the file is absent)."""
    return {artist: name for artist, (name, _) in load_artists(directory).items()}


def load_artists(directory: Path) -> dict[str, tuple[str, str]]:
    """HetRec artistID -> (name, url) from artists.dat (empty when the file is absent)."""
    path = directory / ARTISTS_FILE
    if not path.is_file():
        return {}
    return {
        row[0]: (row[1], row[2] if len(row) > 2 else "")
        for row in _read_rows(path, columns=2, header=True)
    }


def with_artists(data: Interactions, directory: Path, *, artist_of_item: list[str]) -> Interactions:
    """Names and URLs of the items from artists.dat (item i is HetRec artist artist_of_item[i])."""
    artists = load_artists(directory)
    if not artists:
        return data
    known = [artists.get(artist, (artist, "")) for artist in artist_of_item]
    return replace(
        data, item_names=[name for name, _ in known], item_urls=[url for _, url in known]
    )


def with_tags(
    data: Interactions, directory: Path, *, artist_of_item: list[str], hetrec_user_of: list[str]
) -> Interactions:
    """Tag assignments of user_taggedartists.dat between the data's users and items (item i is
    artist artist_of_item[i], user u is HetRec user hetrec_user_of[u]); unchanged when absent."""
    path = directory / TAGGED_FILE
    if not path.is_file():
        return data
    item_of = {artist: index for index, artist in enumerate(artist_of_item)}
    user_of = {user: index for index, user in enumerate(hetrec_user_of)}
    users, items, tags = [], [], []
    for number, row in enumerate(_read_rows(path, columns=3, header=True), start=2):
        user, item = user_of.get(row[0]), item_of.get(row[1])
        if user is not None and item is not None:
            users.append(user)
            items.append(item)
            tags.append(_int(row[2], path=path, line=number, column="tagID"))
    if not tags:
        return data
    vocabulary, tag_index = np.unique(np.asarray(tags), return_inverse=True)
    assignments = TagAssignments(
        users=np.asarray(users, dtype=np.int64),
        items=np.asarray(items, dtype=np.int64),
        tags=tag_index.astype(np.int64),
        count=int(vocabulary.size),
    )
    return replace(data, tags=assignments)


def kg_hetrec_users(directory: Path, artists: set[str]) -> list[str]:
    """HetRec userIDs with at least one of the given artists, ascending: ratings_final's user u
    is the u-th of them (data README, section 2)."""
    rows = _read_rows(directory / HETREC_INTERACTIONS, columns=3, header=True)
    return [str(user) for user in sorted({int(row[0]) for row in rows if row[1] in artists})]


def load_kg_item_index(directory: Path) -> list[str]:
    """KGCN item index -> HetRec artistID (line i holds item i)."""
    path = directory / KG_ITEM_INDEX
    rows = _read_rows(path, columns=2, header=False)
    artists: list[str] = []
    for number, (artist, index) in enumerate(((row[0], row[1]) for row in rows), start=1):
        if _int(index, path=path, line=number, column="item_index") != number - 1:
            raise DataError(f"{path}:{number}: item_index {index} is not the 0-based line number")
        artists.append(artist)
    return artists


def load_ratings_final(directory: Path) -> Interactions:
    """Format 1: `user item label`; item ids stay the KGCN indices ("0".."3845")."""
    path = directory / RATINGS_FILE
    rows = _read_rows(path, columns=3, header=False)
    users, items, labels = [], [], []
    for number, row in enumerate(rows, start=1):
        users.append(str(_int(row[0], path=path, line=number, column="user")))
        items.append(str(_int(row[1], path=path, line=number, column="item")))
        labels.append(_float(row[2], path=path, line=number, column="label"))
    data = _interactions(
        users,
        items,
        labels,
        source={"format": "ratings", "files": [path.name], "sha256": fingerprint([path])},
    )
    if not (directory / KG_ITEM_INDEX).is_file():
        return data
    artists = load_kg_item_index(directory)
    artist_of_item = [
        artists[int(item)] if int(item) < len(artists) else item for item in data.item_ids
    ]
    data = with_artists(data, directory, artist_of_item=artist_of_item)
    if (directory / HETREC_INTERACTIONS).is_file():
        hetrec_users = kg_hetrec_users(directory, set(artists))
        if len(hetrec_users) >= len(data.user_ids):
            data = with_tags(
                data,
                directory,
                artist_of_item=artist_of_item,
                hetrec_user_of=[hetrec_users[int(user)] for user in data.user_ids],
            )
    return data


def load_hetrec(directory: Path) -> Interactions:
    """Format 2: rebuild ratings_final from raw HetRec with HetRec ids (README section 2 rules).

    Without item_index2entity_id.txt (a plain GroupLens download) every artist is an item.

    Positives: every user_artists.dat pair whose artist is in the KG item set. Negatives: per
    user in ascending HetRec id, `np.random.choice(candidates, n_pos, replace=False)` from one
    RandomState(555), candidates = the items that are not the user's positives, ascending.
    """
    interactions_path = directory / HETREC_INTERACTIONS
    rows = _read_rows(interactions_path, columns=3, header=True)
    has_kg_index = (directory / KG_ITEM_INDEX).is_file()
    if has_kg_index:
        artists = load_kg_item_index(directory)
    else:
        # a plain GroupLens download has no KG mapping: every listened artist is an item
        artists = sorted({row[1] for row in rows}, key=lambda text: (len(text), text))
    item_of_artist = {artist: index for index, artist in enumerate(artists)}
    positives: dict[int, list[int]] = {}
    for number, row in enumerate(rows, start=2):
        user = _int(row[0], path=interactions_path, line=number, column="userID")
        _int(row[1], path=interactions_path, line=number, column="artistID")
        item = item_of_artist.get(row[1])
        if item is not None:
            positives.setdefault(user, []).append(item)
    random_state = np.random.RandomState(KGCN_NEGATIVE_SEED)
    all_items = np.arange(len(artists))
    users, items, labels = [], [], []
    user_ids = sorted(positives)
    for user_index, user in enumerate(user_ids):
        liked = positives[user]
        candidates = np.setdiff1d(all_items, np.asarray(liked), assume_unique=False)
        # as many negatives as positives (fewer only when the catalog runs out)
        count = min(len(liked), candidates.size)
        negatives = random_state.choice(candidates, size=count, replace=False)
        users.extend([user_index] * (len(liked) + count))
        items.extend(liked)
        items.extend(int(item) for item in negatives)
        labels.extend([1.0] * len(liked) + [0.0] * count)
    files = [interactions_path, *([directory / KG_ITEM_INDEX] if has_kg_index else [])]
    data = Interactions(
        user_ids=[str(user) for user in user_ids],
        item_ids=list(artists),
        users=np.asarray(users, dtype=np.int64),
        items=np.asarray(items, dtype=np.int64),
        labels=np.asarray(labels, dtype=np.float32),
        item_names=None,
        source={
            "format": "hetrec",
            "files": [path.name for path in files],
            "sha256": fingerprint(files),
        },
    )
    data = with_artists(data, directory, artist_of_item=list(artists))
    return with_tags(data, directory, artist_of_item=list(artists), hetrec_user_of=data.user_ids)


def load_hetrec_median(directory: Path) -> Interactions:
    """Raw HetRec `user_artists.dat` over all its artists, no sampled negatives: label 1 when
    the play count is at least that user's median play count, else 0 (`--split hetrec-median`).

    Item ids are HetRec artist ids (names from artists.dat), user ids HetRec user ids."""
    path = directory / HETREC_INTERACTIONS
    rows = _read_rows(path, columns=3, header=True)
    users, items, plays = [], [], []
    for number, row in enumerate(rows, start=2):
        users.append(str(_int(row[0], path=path, line=number, column="userID")))
        items.append(str(_int(row[1], path=path, line=number, column="artistID")))
        plays.append(float(_int(row[2], path=path, line=number, column="weight")))
    data = _interactions(
        users,
        items,
        [0.0] * len(users),
        source={"format": "hetrec-median", "files": [path.name], "sha256": fingerprint([path])},
    )
    weights = np.asarray(plays)
    order = np.argsort(data.users, kind="stable")
    bounds = np.searchsorted(data.users[order], np.arange(len(data.user_ids) + 1))
    labels = np.zeros(len(weights), dtype=np.float32)
    for user in range(len(data.user_ids)):
        rows_of_user = order[bounds[user] : bounds[user + 1]]
        median = np.median(weights[rows_of_user])
        labels[rows_of_user] = (weights[rows_of_user] >= median).astype(np.float32)
    data = with_artists(replace(data, labels=labels), directory, artist_of_item=data.item_ids)
    return with_tags(data, directory, artist_of_item=data.item_ids, hetrec_user_of=data.user_ids)


def load_generic(path: Path) -> Interactions:
    """Format 3: a CSV or TSV with a header naming `user`, `item` and `rating` columns."""
    _require(path)
    with path.open(encoding="utf-8", newline="") as handle:
        first = handle.readline()
        delimiter = "\t" if first.count("\t") >= first.count(",") and "\t" in first else ","
        handle.seek(0)
        reader = csv.reader(handle, delimiter=delimiter)
        header = [name.strip().lower() for name in next(reader, [])]
        missing = [name for name in ("user", "item", "rating") if name not in header]
        if missing:
            raise DataError(f"{path}:1: header lacks column(s) {', '.join(missing)} (got {header})")
        columns = [header.index(name) for name in ("user", "item", "rating")]
        users, items, labels = [], [], []
        seen: set[tuple[str, str]] = set()
        for number, row in enumerate(reader, start=2):
            if not row or not any(cell.strip() for cell in row):
                continue
            if len(row) < len(header):
                raise DataError(f"{path}:{number}: expected {len(header)} columns, got {len(row)}")
            user, item, rating = (row[column].strip() for column in columns)
            if (user, item) in seen:
                raise DataError(f"{path}:{number}: duplicate (user, item) pair ({user}, {item})")
            seen.add((user, item))
            users.append(user)
            items.append(item)
            labels.append(_float(rating, path=path, line=number, column="rating"))
    if not users:
        raise DataError(f"{path}: no interactions")
    return _interactions(
        users,
        items,
        labels,
        source={"format": "generic", "files": [path.name], "sha256": fingerprint([path])},
    )


def load_interactions(data: Path, data_format: DataFormat = "auto") -> Interactions:
    """Pick the format: a file is generic; a directory with ratings_final.txt is format 1,
    else one with user_artists.dat and item_index2entity_id.txt is format 2."""
    if not data.exists():
        raise DataError(f"{data}: no such file or directory")
    if data_format == "generic" or (data_format == "auto" and data.is_file()):
        return load_generic(data)
    if data_format == "hetrec-median":
        return load_hetrec_median(data)
    if data_format == "ratings" or (data_format == "auto" and (data / RATINGS_FILE).is_file()):
        return load_ratings_final(data)
    if data_format == "hetrec" or (
        data_format == "auto" and (data / HETREC_INTERACTIONS).is_file()
    ):
        return load_hetrec(data)
    raise DataError(
        f"{data}: found neither {RATINGS_FILE} nor {HETREC_INTERACTIONS} + {KG_ITEM_INDEX}"
    )
