"""What the storage tests share: request-log entries and the rows SQL holds."""

from __future__ import annotations

from sqlalchemy import select

from app.storage.db import SessionFactory
from app.storage.request_log import RequestLogEntry
from app.storage.tables import RequestLogRow

SPOOL_BYTES = 1 << 20  # REQUEST_LOG_SPOOL_BYTES of these tests


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


def logged_ids(sessions: SessionFactory) -> list[str]:
    with sessions() as session:
        return sorted(session.scalars(select(RequestLogRow.request_id)))
