"""The request-log interface: one `RequestLogEntry` per recommend call, handed to a sink.

`NullRequestLog` is the default; the registry's SQL sink implements the same `record` and
queues, so recording never blocks the response path. Knows nothing about SQL.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


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


class NullRequestLog:
    """Keeps nothing; the sink of an app without a request-log database."""

    def record(self, entry: RequestLogEntry) -> None:
        return None
