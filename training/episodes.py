"""User splits and per-user episodes (support/query), stored as compact padded arrays.

`tanp` reads the authors' users and episodes exactly; `random` and `hetrec-median` redraw them
with the authors' recipe (docs/training.md). Saved as one npz + one JSON, never pickles.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np

from training.data import DataError, Interactions, TagAssignments

SplitName = Literal["tanp", "random", "hetrec-median"]
SPLITS = ("train", "valid", "test")
TANP_USER_SPLIT = "tanp_user_split.tsv"
TANP_EPISODES = "tanp_split.tsv"
SUPPORT_SIZE = 20
MIN_INTERACTIONS = 30
MAX_INTERACTIONS = 200
HETREC_MEDIAN_MIN_INTERACTIONS = 40


@dataclass(frozen=True)
class EpisodeSet:
    """E episodes, padded: items/labels (E, L) with a length per episode."""

    users: np.ndarray
    support_items: np.ndarray
    support_labels: np.ndarray
    support_len: np.ndarray
    query_items: np.ndarray
    query_labels: np.ndarray
    query_len: np.ndarray

    def __len__(self) -> int:
        return int(self.users.shape[0])

    def support(self, episode: int) -> tuple[np.ndarray, np.ndarray]:
        length = int(self.support_len[episode])
        return self.support_items[episode, :length], self.support_labels[episode, :length]

    def query(self, episode: int) -> tuple[np.ndarray, np.ndarray]:
        length = int(self.query_len[episode])
        return self.query_items[episode, :length], self.query_labels[episode, :length]

    @classmethod
    def from_lists(
        cls,
        *,
        users: list[int],
        supports: list[tuple[np.ndarray, np.ndarray]],
        queries: list[tuple[np.ndarray, np.ndarray]],
    ) -> EpisodeSet:
        support_items, support_labels, support_len = _pad(supports)
        query_items, query_labels, query_len = _pad(queries)
        return cls(
            users=np.asarray(users, dtype=np.int64),
            support_items=support_items,
            support_labels=support_labels,
            support_len=support_len,
            query_items=query_items,
            query_labels=query_labels,
            query_len=query_len,
        )


def _pad(rows: list[tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    width = max((len(items) for items, _ in rows), default=0)
    items = np.zeros((len(rows), width), dtype=np.int64)
    labels = np.zeros((len(rows), width), dtype=np.float32)
    lengths = np.zeros(len(rows), dtype=np.int64)
    for row, (row_items, row_labels) in enumerate(rows):
        items[row, : len(row_items)] = row_items
        labels[row, : len(row_labels)] = row_labels
        lengths[row] = len(row_items)
    return items, labels, lengths


@dataclass(frozen=True)
class Prepared:
    """A dataset with its user split and episodes: everything training and evaluation read."""

    interactions: Interactions
    split: str
    seed: int | None
    user_split: np.ndarray  # (U,) 0 train, 1 valid, 2 test
    episodes: dict[str, EpisodeSet]

    def users_of(self, name: str) -> np.ndarray:
        return np.flatnonzero(self.user_split == SPLITS.index(name))

    def train_rows(self) -> np.ndarray:
        """Row indices of every interaction of every train user (for baselines and priors)."""
        return np.flatnonzero(self.user_split[self.interactions.users] == 0)


def tanp_split(interactions: Interactions, directory: Path) -> Prepared:
    """The authors' shipped users and episodes, row for row."""
    user_path = directory / TANP_USER_SPLIT
    episode_path = directory / TANP_EPISODES
    for path in (user_path, episode_path):
        if not path.is_file():
            raise DataError(f"{path}: file not found (needed by --split tanp)")
    user_index = {user: index for index, user in enumerate(interactions.user_ids)}
    item_index = {item: index for index, item in enumerate(interactions.item_ids)}
    user_split = np.full(len(interactions.user_ids), -1, dtype=np.int64)
    with user_path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            parts = line.rstrip("\n").split("\t")
            if number == 1:
                continue
            if len(parts) != 2 or parts[1] not in SPLITS or parts[0] not in user_index:
                raise DataError(
                    f"{user_path}:{number}: expected `user<TAB>train|valid|test` with a known user"
                )
            user_split[user_index[parts[0]]] = SPLITS.index(parts[1])
    if (user_split < 0).any():
        raise DataError(f"{user_path}: {int((user_split < 0).sum())} users have no split")

    grouped: dict[tuple[str, int], dict[str, list[tuple[int, float]]]] = {}
    owners: dict[tuple[str, int], int] = {}
    with episode_path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            parts = line.rstrip("\n").split("\t")
            if number == 1:
                continue
            if len(parts) != 6 or parts[0] not in SPLITS or parts[3] not in ("support", "query"):
                raise DataError(
                    f"{episode_path}:{number}: expected split episode user role item label"
                )
            split_name, episode, user, role, item, label = parts
            if user not in user_index or item not in item_index:
                raise DataError(f"{episode_path}:{number}: unknown user {user} or item {item}")
            key = (split_name, int(episode))
            owners[key] = user_index[user]
            grouped.setdefault(key, {"support": [], "query": []})[role].append(
                (item_index[item], float(label))
            )
    episodes: dict[str, EpisodeSet] = {}
    for split_name in SPLITS:
        keys = sorted(key for key in grouped if key[0] == split_name)
        episodes[split_name] = EpisodeSet.from_lists(
            users=[owners[key] for key in keys],
            supports=[_columns(grouped[key]["support"]) for key in keys],
            queries=[_columns(grouped[key]["query"]) for key in keys],
        )
    return Prepared(interactions, "tanp", None, user_split, episodes)


def _columns(pairs: list[tuple[int, float]]) -> tuple[np.ndarray, np.ndarray]:
    return (
        np.asarray([item for item, _ in pairs], dtype=np.int64),
        np.asarray([label for _, label in pairs], dtype=np.float32),
    )


def random_split(
    interactions: Interactions,
    *,
    seed: int,
    min_interactions: int = MIN_INTERACTIONS,
    name: str = "random",
) -> Prepared:
    """The authors' recipe with a fresh seed: users shuffled 70/10/20, then episodes for the
    users with min_interactions..200 interactions."""
    rng = np.random.default_rng(seed)
    users = rng.permutation(len(interactions.user_ids))
    train_count = int(len(users) * 0.7)
    valid_count = int(len(users) * 0.1)
    user_split = np.full(len(users), 2, dtype=np.int64)
    user_split[users[:train_count]] = 0
    user_split[users[train_count : train_count + valid_count]] = 1
    rows_of = interactions.by_user()
    train_items = np.zeros(len(interactions.item_ids), dtype=bool)
    for user in users[:train_count]:
        train_items[interactions.items[rows_of[user]]] = True
    episodes: dict[str, EpisodeSet] = {}
    for split_index, split_name in enumerate(SPLITS):
        owners, supports, queries = [], [], []
        for user in users[user_split[users] == split_index]:
            rows = rows_of[user]
            if split_name == "test":
                rows = rows[train_items[interactions.items[rows]]]
            if not min_interactions <= len(rows) <= MAX_INTERACTIONS:
                continue
            rows = rows[rng.permutation(len(rows))]
            items, labels = interactions.items[rows], interactions.labels[rows]
            owners.append(int(user))
            supports.append((items[:SUPPORT_SIZE], labels[:SUPPORT_SIZE]))
            queries.append((items[SUPPORT_SIZE:], labels[SUPPORT_SIZE:]))
        episodes[split_name] = EpisodeSet.from_lists(
            users=owners, supports=supports, queries=queries
        )
    return Prepared(interactions, name, seed, user_split, episodes)


def prepare(
    interactions: Interactions, *, split: SplitName, seed: int, directory: Path | None
) -> Prepared:
    if split == "tanp":
        if directory is None or not directory.is_dir():
            raise DataError("--split tanp needs --data to be the directory holding tanp_split.tsv")
        return tanp_split(interactions, directory)
    if split == "hetrec-median":
        if interactions.source.get("format") != "hetrec-median":
            raise DataError("--split hetrec-median needs the raw HetRec user_artists.dat")
        return random_split(
            interactions,
            seed=seed,
            min_interactions=HETREC_MEDIAN_MIN_INTERACTIONS,
            name="hetrec-median",
        )
    return random_split(interactions, seed=seed)


def all_user_episodes(
    prepared: Prepared, *, min_support: int = 2, rng: np.random.Generator
) -> EpisodeSet:
    """Episodes for every train user with at least 2 * min_support interactions (the reference
    makes them only for users with 30..200); shorter users give smaller support sets (half of
    their interactions)."""
    interactions = prepared.interactions
    rows_of = interactions.by_user()
    owners, supports, queries = [], [], []
    for user in prepared.users_of("train"):
        rows = rows_of[user]
        if len(rows) < 2 * min_support:
            continue
        rows = rows[rng.permutation(len(rows))]
        size = min(SUPPORT_SIZE, len(rows) // 2)
        items, labels = interactions.items[rows], interactions.labels[rows]
        owners.append(int(user))
        supports.append((items[:size], labels[:size]))
        queries.append((items[size:], labels[size:]))
    return EpisodeSet.from_lists(users=owners, supports=supports, queries=queries)


def save_prepared(prepared: Prepared, out: Path) -> None:
    """PREP_DIR/episodes.npz (arrays) + PREP_DIR/prepared.json (ids, names, provenance)."""
    out.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, np.ndarray] = {
        "users": prepared.interactions.users,
        "items": prepared.interactions.items,
        "labels": prepared.interactions.labels,
        "user_split": prepared.user_split,
    }
    for split_name, episodes in prepared.episodes.items():
        for key, value in vars(episodes).items():
            arrays[f"{split_name}__{key}"] = value
    tags = prepared.interactions.tags
    if tags is not None:
        arrays.update(tag_users=tags.users, tag_items=tags.items, tag_tags=tags.tags)
    np.savez_compressed(out / "episodes.npz", **arrays)  # type: ignore[arg-type]
    meta = {
        "split": prepared.split,
        "seed": prepared.seed,
        "user_ids": prepared.interactions.user_ids,
        "item_ids": prepared.interactions.item_ids,
        "item_names": prepared.interactions.item_names,
        "item_urls": prepared.interactions.item_urls,
        "tag_count": tags.count if tags is not None else None,
        "source": prepared.interactions.source,
        "episodes": {name: len(episodes) for name, episodes in prepared.episodes.items()},
    }
    (out / "prepared.json").write_text(
        json.dumps(meta, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def load_prepared(directory: Path) -> Prepared:
    meta_path, arrays_path = directory / "prepared.json", directory / "episodes.npz"
    for path in (meta_path, arrays_path):
        if not path.is_file():
            raise DataError(f"{path}: not found (run `tanp-train prepare` first)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    with np.load(arrays_path, allow_pickle=False) as arrays:
        values = {key: arrays[key] for key in arrays.files}
    interactions = Interactions(
        user_ids=meta["user_ids"],
        item_ids=meta["item_ids"],
        users=values["users"],
        items=values["items"],
        labels=values["labels"],
        item_names=meta["item_names"],
        source=meta["source"],
        item_urls=meta.get("item_urls"),
        tags=TagAssignments(
            users=values["tag_users"],
            items=values["tag_items"],
            tags=values["tag_tags"],
            count=int(meta["tag_count"]),
        )
        if meta.get("tag_count") is not None
        else None,
    )
    fields = list(EpisodeSet.__dataclass_fields__)
    episodes = {
        name: EpisodeSet(**{key: values[f"{name}__{key}"] for key in fields}) for name in SPLITS
    }
    return Prepared(interactions, meta["split"], meta["seed"], values["user_split"], episodes)
