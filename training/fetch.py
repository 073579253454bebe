"""Fetch HetRec 2011 Last.fm-2k: download the GroupLens zip (or copy a local folder), verify, cache.

Knows the raw files the loader reads and their sha256 after CRLF -> LF, not episodes or splits.
Every failure raises `FetchError` with one actionable line. The GroupLens zip lacks the KGCN item
mapping: without it the loader reads `user_artists.dat` as a generic HetRec dataset.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import logging
import os
import sys
import tempfile
import urllib.error
import urllib.parse
import urllib.request
import zipfile
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path, PurePosixPath
from typing import BinaryIO

from tanp.digest import sha256_hex

logger = logging.getLogger(__name__)

HETREC_URL = "https://files.grouplens.org/datasets/hetrec2011/hetrec2011-lastfm-2k.zip"

# sha256 of each file's bytes after CRLF -> LF (the GroupLens zip most likely ships CRLF).
HETREC_SHA256: Mapping[str, str] = {
    "user_artists.dat": "254272fa721c3935e8be286d28c051b206844307128698ab4eaa41d483379416",
    "artists.dat": "c173881362c6b28551368fecb3c0be5a6a30a6cd859e1f5775413dfe46d48648",
}

# Files a local copy (`--from DIR`, e.g. ../shared/data/lastfm) may hold besides the raw HetRec
# ones: copied and verified when present, never required.
EXTRA_SHA256: Mapping[str, str] = {
    "item_index2entity_id.txt": "496475ddc39b0e15956c58b86d0566bce96bf51c7daaa49d66bc1b9fefaeef1a",
    "ratings_final.txt": "c92c5aa4b5424a2bfdf498d9fe234fb5d8a780bc76ada2327b029218d086b6e2",
    "tanp_user_split.tsv": "5ef7076f3c9229d0cff095bbac01d30a25242fb634eeb9c475cf7e74efdd1495",
    "tanp_split.tsv": "0ed15cd30e5120bb2fc056a96535198987a568a05e0b4b7b9286768fe865197b",
}

ITEM_MAPPING_FILE = "item_index2entity_id.txt"
MARKER_FILE = "FETCHED.json"
_CHUNK_BYTES = 1 << 16
_USER_AGENT = "tanp-rec fetch-data (urllib)"


class FetchError(Exception):
    """The data could not be fetched or verified; the message is one line a user can act on."""


def default_data_dir() -> Path:
    """`$TANP_DATA_DIR` when set, else `~/.cache/tanp-rec/lastfm` (read at call time)."""
    configured = os.environ.get("TANP_DATA_DIR")
    if configured:
        return Path(configured).expanduser()
    return Path.home() / ".cache" / "tanp-rec" / "lastfm"


def normalise_newlines(data: bytes) -> bytes:
    """CRLF -> LF; a lone CR stays (it is data, not a line ending)."""
    return data.replace(b"\r\n", b"\n")


def is_verified(directory: Path, expected: Mapping[str, str]) -> bool:
    """True when `directory` holds every expected file with exactly the expected sha256."""
    for name, digest in expected.items():
        path = directory / name
        if not path.is_file() or sha256_hex(path) != digest:
            return False
    return True


def has_item_mapping(directory: Path) -> bool:
    """True when the KGCN item mapping sits beside the raw files (the 3,846-item dataset)."""
    return (directory / ITEM_MAPPING_FILE).is_file()


def describe(directory: Path) -> str:
    """One line on what `directory` holds, for the CLI and the log."""
    if has_item_mapping(directory):
        return f"data ready in {directory}: HetRec files and {ITEM_MAPPING_FILE} (3,846 items)"
    return (
        f"data ready in {directory}: only the raw HetRec files are present"
        f" (no {ITEM_MAPPING_FILE}), so the loader will treat user_artists.dat"
        " as a generic HetRec dataset"
    )


def fetch_data(
    *,
    to: Path,
    source: Path | None = None,
    url: str = HETREC_URL,
    timeout: float = 30,
    expected: Mapping[str, str] = HETREC_SHA256,
    extras: Mapping[str, str] = EXTRA_SHA256,
) -> Path:
    """Make `to` hold the verified HetRec files and return it.

    Without `source`: returns at once when `to` already holds verified files (no network);
    otherwise downloads the zip at `url`, verifies the members named in `expected` (sha256 after
    CRLF -> LF) and extracts them LF-normalised. With `source` (a folder or a zip file): copies from
    there with the same verification, plus any of `extras` it holds. Writes `FETCHED.json`.
    """
    to = to.expanduser()
    if source is None and is_verified(to, expected):
        logger.info("cache hit: %s", describe(to))
        return to
    if source is not None:
        source = source.expanduser()
        if source.is_dir() and to.exists() and source.resolve() == to.resolve():
            _read_folder(source, expected=expected, extras=extras)
            logger.info("%s", describe(to))
            return to
    try:
        to.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise FetchError(f"cannot create {to}: {error.strerror}; pick another --to") from error
    if not os.access(to, os.W_OK):
        raise FetchError(f"cannot write to {to}; pick another --to")
    if source is None:
        files, zip_digest = _download_and_read(url, to=to, timeout=timeout, expected=expected)
        origin = url
    elif source.is_dir():
        files, zip_digest = _read_folder(source, expected=expected, extras=extras), None
        origin = str(source)
    elif source.is_file():
        files, zip_digest = _read_zip(source, expected=expected), sha256_hex(source)
        origin = str(source)
    else:
        raise FetchError(f"{source} does not exist: pass a folder or a zip with the HetRec files")
    _write_files(to, files=files)
    marker = {
        "source": origin,
        "zip_sha256": zip_digest,
        "files": {name: sha256_hex(data) for name, data in sorted(files.items())},
        "fetched_at": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    _write_files(to, files={MARKER_FILE: (json.dumps(marker, indent=2) + "\n").encode()})
    logger.info("%s", describe(to))
    return to


def _download_and_read(
    url: str, *, to: Path, timeout: float, expected: Mapping[str, str]
) -> tuple[dict[str, bytes], str]:
    """Stream `url` into a temporary file under `to`, then read the verified members from it."""
    handle, temporary_name = tempfile.mkstemp(dir=to, prefix=".download-", suffix=".zip")
    temporary = Path(temporary_name)
    try:
        with os.fdopen(handle, "wb") as sink:
            zip_digest = download(url, sink=sink, timeout=timeout)
        return _read_zip(temporary, expected=expected, label=url), zip_digest
    finally:
        temporary.unlink(missing_ok=True)


def download(url: str, *, sink: BinaryIO, timeout: float) -> str:
    """Copy the body at `url` into `sink` in chunks; return its sha256.

    Raises `FetchError` when the host cannot be reached, the server answers an HTTP error, or the
    body is shorter than its Content-Length (a truncated download).
    """
    host = urllib.parse.urlsplit(url).netloc or url
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    # A fresh opener reads the proxy environment now, not when some earlier urlopen ran.
    opener = urllib.request.build_opener()
    try:
        response = opener.open(request, timeout=timeout)
    except urllib.error.HTTPError as error:
        error.close()
        raise FetchError(
            f"download of {url} failed: HTTP {error.code} {error.reason};"
            " pass --from DIR with a local copy"
        ) from error
    except urllib.error.URLError as error:
        raise FetchError(
            f"cannot reach {host}: {error.reason}; pass --from DIR with a local copy"
        ) from error
    except (TimeoutError, OSError, http.client.HTTPException) as error:
        raise FetchError(
            f"cannot reach {host}: {error}; pass --from DIR with a local copy"
        ) from error
    digest = hashlib.sha256()
    received = 0
    with response:
        announced = response.headers.get("Content-Length")
        try:
            while chunk := response.read(_CHUNK_BYTES):
                sink.write(chunk)
                digest.update(chunk)
                received += len(chunk)
        except http.client.IncompleteRead as error:
            raise FetchError(
                f"truncated download from {url}: the connection closed after"
                f" {received + len(error.partial)} bytes; try again"
            ) from error
        except (TimeoutError, OSError, http.client.HTTPException) as error:
            raise FetchError(
                f"download of {url} broke off after {received} bytes: {error}; try again"
            ) from error
    if announced is not None and announced.isdigit() and received != int(announced):
        raise FetchError(
            f"truncated download from {url}: got {received} of {announced} bytes; try again"
        )
    return digest.hexdigest()


def _read_zip(
    archive: Path, *, expected: Mapping[str, str], label: str | None = None
) -> dict[str, bytes]:
    """The expected members of `archive` (found by base name), LF-normalised and verified."""
    origin = label or str(archive)
    try:
        with zipfile.ZipFile(archive) as bundle:
            members = {
                PurePosixPath(info.filename).name: info
                for info in bundle.infolist()
                if not info.is_dir()
            }
            files: dict[str, bytes] = {}
            for name, digest in expected.items():
                if name not in members:
                    raise FetchError(f"{origin} has no member {name}: not the HetRec Last.fm zip?")
                files[name] = _verified(
                    normalise_newlines(bundle.read(members[name])),
                    name=name,
                    digest=digest,
                    origin=origin,
                )
            return files
    except (zipfile.BadZipFile, zipfile.LargeZipFile) as error:
        raise FetchError(f"{origin} is not a readable zip archive: {error}") from error


def _read_folder(
    folder: Path, *, expected: Mapping[str, str], extras: Mapping[str, str]
) -> dict[str, bytes]:
    """The expected files of `folder` (and any extras it holds), LF-normalised and verified."""
    files: dict[str, bytes] = {}
    for name, digest in {**extras, **expected}.items():
        path = folder / name
        if not path.is_file():
            if name in expected:
                raise FetchError(f"{folder} has no {name}: pass the folder with the HetRec files")
            continue
        files[name] = _verified(
            normalise_newlines(path.read_bytes()), name=name, digest=digest, origin=str(folder)
        )
    return files


def _verified(data: bytes, *, name: str, digest: str, origin: str) -> bytes:
    """`data` unchanged when its sha256 is `digest`, else a `FetchError` naming both."""
    actual = sha256_hex(data)
    if actual != digest:
        raise FetchError(
            f"checksum mismatch for {name} from {origin}: expected sha256 {digest}, got {actual}"
        )
    return data


def _write_files(directory: Path, *, files: Mapping[str, bytes]) -> None:
    """Write each file atomically (temporary name, then rename) so a crash leaves no half file."""
    for name, data in files.items():
        partial = directory / f".{name}.partial"
        try:
            partial.write_bytes(data)
            partial.replace(directory / name)
        except OSError as error:
            partial.unlink(missing_ok=True)
            raise FetchError(f"cannot write {directory / name}: {error.strerror}") from error


def add_fetch_parser(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Register `fetch-data [--to DIR] [--from DIR] [--url URL] [--timeout S] [--expect ...]`."""
    parser = subparsers.add_parser(
        "fetch-data",
        help="download HetRec 2011 Last.fm-2k (or copy a local copy), verify and cache it",
        description=(
            "Download the GroupLens HetRec 2011 Last.fm-2k zip, verify user_artists.dat and "
            "artists.dat by sha256 and extract them (LF line endings). Returns at once when the "
            "target already holds verified files. HetRec data is for non-commercial use."
        ),
    )
    parser.add_argument(
        "--to",
        type=Path,
        default=None,
        help="target folder (default: $TANP_DATA_DIR or ~/.cache/tanp-rec/lastfm)",
    )
    parser.add_argument(
        "--from",
        dest="source",
        type=Path,
        default=None,
        metavar="DIR",
        help="copy from a local folder (or the zip file) instead of downloading",
    )
    parser.add_argument("--url", default=HETREC_URL, help="zip to download (default: GroupLens)")
    parser.add_argument(
        "--timeout", type=float, default=30.0, help="network timeout in seconds (default: 30)"
    )
    parser.add_argument(
        "--expect",
        type=_expected_digest,
        action="append",
        default=[],
        metavar="NAME=SHA256",
        help="override the expected sha256 (after CRLF -> LF) of user_artists.dat or artists.dat",
    )
    parser.set_defaults(handler=run_fetch)


def _expected_digest(value: str) -> tuple[str, str]:
    """Parse `NAME=SHA256` for `--expect`."""
    name, _, digest = value.partition("=")
    if (
        name not in HETREC_SHA256
        or len(digest) != 64
        or not all(character in "0123456789abcdef" for character in digest.lower())
    ):
        raise argparse.ArgumentTypeError(
            f"expected NAME=SHA256 with NAME one of {', '.join(HETREC_SHA256)}, got {value!r}"
        )
    return name, digest.lower()


def run_fetch(args: argparse.Namespace) -> int:
    """Run `fetch-data` from parsed arguments: 0 on success, 2 with a one-line error otherwise."""
    target = args.to if args.to is not None else default_data_dir()
    expected = {**HETREC_SHA256, **dict(args.expect)}
    try:
        directory = fetch_data(
            to=target, source=args.source, url=args.url, timeout=args.timeout, expected=expected
        )
    except FetchError as error:
        print(f"tanp-train fetch-data: error: {error}", file=sys.stderr)
        return 2
    print(describe(directory))
    return 0
