"""The request log: one `RequestLogEntry` per answered recommend call, handed to a sink.

`RequestLogSink` is the interface the recommender writes to; `SqlRequestLog` is the sink the
lifespan wires in: a `SpooledSqlWriter` of `request_log` rows, so a slow or dead database never
delays or fails a recommendation and an outage of minutes loses no row (docs/spool.md).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Protocol

from app.storage.spooled_writer import SpooledSqlWriter
from app.storage.tables import RequestLogRow

REQUEST_ID_LENGTH = 64  # the request_log column


@dataclass(frozen=True)
class RequestLogEntry:
    """What one recommend call did (SPEC section 7's request log row)."""

    request_id: str
    model_version: str
    support_size: int
    k: int
    latency_ms: float
    cache_hit: bool
    fallback: str | None


class RequestLogSink(Protocol):
    def record(self, entry: RequestLogEntry) -> None:
        """Accept one entry; must return quickly (queue, do not write inline)."""
        ...


class SqlRequestLog(SpooledSqlWriter):
    """RequestLogSink over a SpooledSqlWriter of `request_log` rows."""

    model = RequestLogRow

    def record(self, entry: RequestLogEntry) -> None:
        # the row's created_at is the request's, not the (possibly much later) write's
        self.add(
            {
                "request_id": entry.request_id[:REQUEST_ID_LENGTH],
                "model_version": entry.model_version,
                "support_size": entry.support_size,
                "k": entry.k,
                "latency_ms": entry.latency_ms,
                "cache_hit": entry.cache_hit,
                "fallback": entry.fallback,
                "created_at": datetime.now(UTC),
            }
        )
