"""`SpooledSqlWriter` (as the request log): rows wait in the spool while the database is down
and land when it returns, survive a worker killed mid-outage, are dropped (and counted) only
past the bounds, and a row the database refuses is dropped alone."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path

import pytest
from model_versions import migrated_sqlite
from sqlalchemy import select
from storage_helpers import SPOOL_BYTES, entry, logged_ids

from app.storage.db import make_engine, make_session_factory, run_migrations
from app.storage.request_log import SqlRequestLog
from app.storage.spool import DiskSpool, MemorySpool
from app.storage.tables import RequestLogRow
from tests.support.polling import wait_for


@pytest.mark.parametrize("spool", ["disk", "memory"])
def test_rows_recorded_while_the_database_is_down_land_when_it_returns(
    tmp_path: Path, spool: str
) -> None:
    """Issue 16 item 5: a failed batch used to be dropped."""
    url = f"sqlite:///{tmp_path / 'late.db'}"
    sessions = make_session_factory(make_engine(url))
    failures: list[int] = []
    spool_dir = tmp_path / "spool"
    if spool == "memory":
        spool_dir.write_text("a file where the folder should be")  # unusable: memory spool
    log = SqlRequestLog(
        sessions, spool_dir=spool_dir, spool_max_bytes=SPOOL_BYTES, flush_seconds=0.02,
        max_backoff_seconds=0.05, on_failure=failures.append,
    )  # fmt: skip
    assert isinstance(log.spool, DiskSpool if spool == "disk" else MemorySpool)
    for number in range(6):
        log.record(entry(number))  # no tables yet: every write fails
    assert wait_for(lambda: log.failed >= 2, timeout=10)
    assert not log.flush(timeout=0.2)  # they wait in the spool
    assert log.pending() == 6 and log.last_error is not None and log.dropped == 0

    run_migrations(url)  # the database "comes back"
    for number in range(6, 10):
        log.record(entry(number))
    assert log.flush(timeout=10)
    log.close()

    assert log.written == 10 and log.last_error is None and sum(failures) == log.failed
    assert logged_ids(sessions) == sorted(f"r{number}" for number in range(10))


def test_the_spool_is_bounded_and_counts_what_it_drops(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'late.db'}"
    sessions = make_session_factory(make_engine(url))
    dropped: list[int] = []
    row_bytes = 200  # one spooled row is about 180 bytes of JSON
    log = SqlRequestLog(
        sessions, spool_dir=tmp_path / "spool", spool_max_bytes=5 * row_bytes,
        flush_seconds=0.02, max_backoff_seconds=0.05, on_drop=dropped.append,
    )  # fmt: skip
    for number in range(20):
        log.record(entry(number))
    assert wait_for(lambda: log.pending() + log.dropped == 20 and log.failed >= 1, timeout=10)
    assert 0 < log.pending() <= 5 and log.dropped == sum(dropped) == 20 - log.pending()

    run_migrations(url)
    assert log.flush(timeout=10)
    log.close()
    assert len(logged_ids(sessions)) + log.dropped == 20


def test_the_memory_queue_is_bounded_when_the_spool_cannot_keep_up(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'late.db'}"
    log = SqlRequestLog(
        make_session_factory(make_engine(url)),
        spool_dir=tmp_path / "spool",
        spool_max_bytes=SPOOL_BYTES,
        capacity=3,
        flush_seconds=30,  # the spooler sleeps through the burst
    )
    dropped_before = log.dropped
    for number in range(5):
        log.record(entry(number))
    assert log.dropped - dropped_before == 2  # the two oldest
    log.close(timeout=2)
    log.record(entry(9))  # after close: ignored, not raised


SPOOL_AND_DIE = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from app.storage.db import make_engine, make_session_factory
    from app.storage.request_log import RequestLogEntry, SqlRequestLog

    url, spool = sys.argv[1], Path(sys.argv[2])
    log = SqlRequestLog(make_session_factory(make_engine(url)), spool_dir=spool,
                        spool_max_bytes=2**20, flush_seconds=0.02, max_backoff_seconds=0.05)
    for number in range(30):
        log.record(RequestLogEntry(f"d{number}", "v1", 1, 10, 1.0, False, None))
    while log.spool.pending_rows() < 30 or log.failed == 0:
        time.sleep(0.01)
    print("spooled", flush=True)
    time.sleep(60)
    """
)


def test_rows_spooled_by_a_worker_killed_during_an_outage_are_written_by_the_next(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'late.db'}"
    spool = tmp_path / "spool"
    worker = subprocess.Popen(
        [sys.executable, "-c", SPOOL_AND_DIE, url, str(spool)],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdout is not None
    with worker.stdout:
        try:
            assert worker.stdout.readline().strip() == "spooled"
        finally:
            os.kill(worker.pid, signal.SIGKILL)
            worker.wait(10)

    run_migrations(url)
    sessions = make_session_factory(make_engine(url))
    successor = SqlRequestLog(
        sessions, spool_dir=spool, spool_max_bytes=SPOOL_BYTES, flush_seconds=0.02
    )
    assert successor.flush(timeout=10)
    successor.close()
    assert logged_ids(sessions) == sorted(f"d{number}" for number in range(30))
    assert list(spool.iterdir()) == []


def test_a_row_the_database_refuses_is_dropped_alone(tmp_path: Path) -> None:
    """Isolated instead of retried (with everything queued behind it) forever."""
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
