"""The SQL request-log writer: batches off the hot path, counted failures, recovery when the
database returns, and bounded memory."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from model_versions import migrated_sqlite
from sqlalchemy import func, select

from app.db import SessionFactory, make_engine, make_session_factory, run_migrations
from app.models_sql import RequestLogRow
from app.request_log import RequestLogEntry, SqlRequestLog


@pytest.fixture
def sessions(tmp_path: Path) -> SessionFactory:
    return migrated_sqlite(tmp_path / "log.db")[1]


def entry(number: int, *, fallback: str | None = None) -> RequestLogEntry:
    return RequestLogEntry(
        request_id=f"r{number}",
        model_version="v1",
        support_size=number % 7,
        k=10,
        latency_ms=1.5 * number,
        cache_hit=number % 2 == 0,
        fallback=fallback,
    )


def count_log_rows(sessions: SessionFactory) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(RequestLogRow)) or 0


def test_request_log_writes_batches_in_the_background(sessions: SessionFactory) -> None:
    log = SqlRequestLog(sessions, batch_size=16, flush_seconds=0.05)
    started = time.perf_counter()
    for number in range(50):
        log.record(entry(number, fallback="popularity" if number == 0 else None))
    recording_seconds = time.perf_counter() - started
    assert log.flush(timeout=5)
    log.close()

    assert recording_seconds < 0.5  # recording never waits for SQL
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


def test_request_log_counts_failures_and_recovers_when_the_database_returns(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'late.db'}"
    sessions = make_session_factory(make_engine(url))
    failures: list[int] = []
    log = SqlRequestLog(
        sessions, batch_size=4, flush_seconds=0.02, max_backoff_seconds=0.05,
        on_failure=failures.append,
    )  # fmt: skip
    for number in range(6):
        log.record(entry(number))  # no tables yet: every write fails
    assert log.flush(timeout=5)
    assert sum(failures) == 6 and log.failed == 6
    assert log.last_error is not None

    run_migrations(url)  # the database "comes back"
    for number in range(6, 10):
        log.record(entry(number))
    assert log.flush(timeout=5)
    log.close()

    assert log.written == 4 and log.last_error is None
    assert count_log_rows(sessions) == 4


def test_request_log_memory_is_bounded_and_drops_the_oldest(sessions: SessionFactory) -> None:
    dropped: list[int] = []
    # A long flush interval keeps the writer asleep while the queue overflows.
    log = SqlRequestLog(
        sessions, capacity=3, batch_size=100, flush_seconds=30, on_drop=dropped.append
    )
    for number in range(5):
        log.record(entry(number))
    assert log.pending() == 3
    log.close(timeout=5)

    assert (log.dropped, sum(dropped)) == (2, 2)
    with sessions() as session:
        kept = sorted(session.scalars(select(RequestLogRow.request_id)))
    assert kept == ["r2", "r3", "r4"]
    log.record(entry(9))  # after close: ignored, not raised
    assert count_log_rows(sessions) == 3
