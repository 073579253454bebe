"""sha256_hex: the same hex digest for bytes and for a file holding them, however long."""

from __future__ import annotations

import hashlib
from pathlib import Path

from tanp.digest import sha256_hex


def test_bytes_and_a_file_of_them_give_the_standard_digest(tmp_path: Path) -> None:
    for size in (0, 5, 3 * (1 << 20) + 17):  # empty, one block, several blocks
        data = bytes(index % 251 for index in range(size))
        path = tmp_path / f"{size}.bin"
        path.write_bytes(data)
        assert sha256_hex(data) == sha256_hex(path) == hashlib.sha256(data).hexdigest()
