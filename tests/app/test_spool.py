"""The spool itself: segment files that survive a torn line, and a writer that isolates a row
the database refuses instead of retrying it (and everything queued behind it) forever."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from model_versions import migrated_sqlite
from sqlalchemy import select

from app.storage.request_log import SqlRequestLog
from app.storage.spool import DiskSpool
from app.storage.tables import RequestLogRow

SPOOL_BYTES = 1 << 20  # REQUEST_LOG_SPOOL_BYTES of these tests


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


def test_a_row_the_database_refuses_is_dropped_alone(tmp_path: Path) -> None:
    sessions = migrated_sqlite(tmp_path / "log.db")[1]
    dropped: list[int] = []
    log = SqlRequestLog(
        sessions,
        spool_dir=tmp_path / "spool",
        spool_max_bytes=SPOOL_BYTES,
        flush_seconds=0.02,
        on_drop=dropped.append,
    )
    good = {
        "model_version": "v1", "support_size": 1, "k": 10, "latency_ms": 1.0,
        "cache_hit": False, "fallback": None, "created_at": datetime.now(UTC),
    }  # fmt: skip
    log.add({**good, "request_id": "before"})
    log.add({**good, "request_id": None})  # NOT NULL: refused by the database, every time
    log.add({**good, "request_id": "after"})
    assert log.flush(timeout=10)
    log.close()
    with sessions() as session:
        assert sorted(session.scalars(select(RequestLogRow.request_id))) == ["after", "before"]
    assert dropped == [1] and log.dropped == 1
