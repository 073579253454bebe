"""`DiskSpool`: segment files that survive a torn line (skipped and counted)."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from app.storage.spool import DiskSpool


def test_a_torn_spool_line_is_skipped_and_counted(tmp_path: Path) -> None:
    dropped: list[int] = []
    spool = DiskSpool(tmp_path / "spool", max_bytes=10_000, on_drop=dropped.append)
    at = datetime(2025, 1, 1, tzinfo=UTC)
    spool.append([{"request_id": "a", "created_at": at}])
    segment = spool.oldest()
    assert segment is not None
    with Path(segment.key).open("a") as handle:
        handle.write('{"request_id": "b", "creat')  # a crash in the middle of a line
    again = spool.oldest()
    assert again is not None and again.rows == [{"request_id": "a", "created_at": at}]
    assert dropped == [1]
    spool.remove(again)
    assert spool.pending_rows() == 0
    spool.close()
