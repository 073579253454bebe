"""The request log: one `RequestLogEntry` per answered recommend call, handed to a sink.

`RequestLogSink` is the interface the recommender writes to; `SqlRequestLog` is the sink the
lifespan wires in: a bounded queue drained by one background thread, so a slow or dead database
never delays or fails a recommendation (failed writes are counted through a callback and
dropped). `NullRequestLog` keeps nothing (unit tests).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from sqlalchemy import insert

from app.db import SessionFactory, first_line
from app.models_sql import RequestLogRow

logger = logging.getLogger(__name__)


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
    """Keeps nothing."""

    def record(self, entry: RequestLogEntry) -> None:
        return None


class SqlRequestLog:
    """RequestLogSink writing batches from one daemon thread; `record` never blocks on SQL.

    Memory is bounded by `capacity`: when full, the oldest entry is dropped (counted in
    `dropped` and reported through `on_drop`). A failed batch is dropped, counted in `failed`
    and reported through `on_failure`; the writer then backs off and tries the next batch, so
    logging resumes by itself when the database comes back.
    """

    def __init__(
        self,
        session_factory: SessionFactory,
        *,
        capacity: int = 10_000,
        batch_size: int = 200,
        flush_seconds: float = 0.2,
        max_backoff_seconds: float = 5.0,
        on_failure: Callable[[int], None] | None = None,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        self._session_factory = session_factory
        # (entry, time it was recorded): the row's created_at is the request's, not the write's.
        self._queue: collections.deque[tuple[RequestLogEntry, datetime]] = collections.deque(
            maxlen=capacity
        )
        self._batch_size = batch_size
        self._flush_seconds = flush_seconds
        self._max_backoff_seconds = max_backoff_seconds
        self._on_failure = on_failure
        self._on_drop = on_drop
        self._condition = threading.Condition()
        self._closing = False
        self._busy = False
        self.written = 0
        self.failed = 0
        self.dropped = 0
        self.last_error: str | None = None
        self._thread = threading.Thread(target=self._run, name="request-log-writer", daemon=True)
        self._thread.start()

    def record(self, entry: RequestLogEntry) -> None:
        dropped = False
        with self._condition:
            if self._closing:
                return
            if len(self._queue) == self._queue.maxlen:
                self.dropped += 1
                dropped = True
            self._queue.append((entry, datetime.now(UTC)))
            if len(self._queue) >= self._batch_size:
                self._condition.notify()
        if dropped and self._on_drop is not None:
            self._on_drop(1)

    def pending(self) -> int:
        with self._condition:
            return len(self._queue)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every queued entry was written or failed; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._condition:
            self._condition.notify_all()
            while self._queue or self._busy:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    return False
                self._condition.wait(min(remaining, 0.05))
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (bounded by `timeout`), then stop the writer thread."""
        with self._condition:
            self._closing = True
            self._condition.notify_all()
        self._thread.join(timeout)
        if self._thread.is_alive():
            logger.warning(
                "request log writer still busy after %.1fs; %d entries left",
                timeout,
                self.pending(),
            )

    def _take_batch(self) -> list[tuple[RequestLogEntry, datetime]]:
        with self._condition:
            if not self._queue and not self._closing:
                self._condition.wait(self._flush_seconds)
            batch = [self._queue.popleft() for _ in range(min(self._batch_size, len(self._queue)))]
            self._busy = bool(batch)
            return batch

    def _run(self) -> None:
        backoff = 0.0
        while True:
            batch = self._take_batch()
            if not batch:
                with self._condition:
                    self._condition.notify_all()
                    if self._closing and not self._queue:
                        return
                continue
            ok = self._write(batch)
            with self._condition:
                self._busy = False
                self._condition.notify_all()
                closing = self._closing
            if ok:
                backoff = 0.0
            elif not closing:
                # A dead DB fails every attempt; pause so the writer does not spin on it.
                backoff = min(max(backoff * 2, 0.25), self._max_backoff_seconds)
                with self._condition:
                    self._condition.wait_for(lambda: self._closing, backoff)

    def _write(self, batch: list[tuple[RequestLogEntry, datetime]]) -> bool:
        rows = [_log_row(entry, at) for entry, at in batch]
        try:
            with self._session_factory.begin() as session:
                session.execute(insert(RequestLogRow), rows)
        except Exception as error:  # any driver/network error: count, drop the batch, go on
            self.failed += len(batch)
            message = first_line(error)
            if self.last_error is None:
                logger.warning("request log write failed (%d entries): %s", len(batch), message)
            self.last_error = message
            if self._on_failure is not None:
                try:
                    self._on_failure(len(batch))
                except Exception:
                    logger.exception("request log failure callback raised")
            return False
        if self.last_error is not None:
            logger.info("request log writes recovered")
            self.last_error = None
        self.written += len(batch)
        return True


def _log_row(entry: RequestLogEntry, at: datetime) -> dict[str, Any]:
    return {
        "request_id": entry.request_id,
        "model_version": entry.model_version,
        "support_size": entry.support_size,
        "k": entry.k,
        "latency_ms": entry.latency_ms,
        "cache_hit": entry.cache_hit,
        "fallback": entry.fallback,
        "created_at": at,
    }
