"""`SqlRequestLog`: one row per entry, with the entry's fields, written off the hot path."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select
from storage_helpers import SPOOL_BYTES, entry

from app.storage.db import SessionFactory
from app.storage.request_log import SqlRequestLog
from app.storage.tables import RequestLogRow


def test_request_log_writes_rows_in_the_background(
    sessions: SessionFactory, tmp_path: Path
) -> None:
    log = SqlRequestLog(
        sessions, spool_dir=tmp_path / "spool", spool_max_bytes=SPOOL_BYTES, flush_seconds=0.02
    )
    for number in range(50):
        log.record(entry(number, fallback="popularity" if number == 0 else None))
    assert log.flush(timeout=10)
    log.close()

    assert (log.written, log.failed, log.dropped) == (50, 0, 0)
    with sessions() as session:
        rows = {row.request_id: row for row in session.scalars(select(RequestLogRow))}
    assert len(rows) == 50
    first = rows["r0"]
    assert (first.model_version, first.k, first.fallback, first.cache_hit) == (
        "v1",
        10,
        "popularity",
        True,
    )
    assert rows["r3"].latency_ms == pytest.approx(4.5)
    assert rows["r3"].support_size == 3
    assert list((tmp_path / "spool").iterdir()) == []  # nothing left behind
