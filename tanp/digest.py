"""The one sha256 helper: hex digest of bytes or of a file (checkpoints, data files, downloads)."""

from __future__ import annotations

import hashlib
from pathlib import Path

_BLOCK_BYTES = 1 << 20


def sha256_hex(source: bytes | Path) -> str:
    """Hex sha256 of `source`: bytes as given, or a file's bytes read block by block."""
    if isinstance(source, bytes):
        return hashlib.sha256(source).hexdigest()
    digest = hashlib.sha256()
    with source.open("rb") as handle:
        for block in iter(lambda: handle.read(_BLOCK_BYTES), b""):
            digest.update(block)
    return digest.hexdigest()
