"""`SpooledSqlWriter`: rows of one table that must survive a database outage, moved from a
memory queue to a spool (`app.storage.spool`) to SQL on two threads of its own; `add` never
blocks. Rows are dropped, and counted, only past the bounds. The protocol: docs/spool.md.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import ClassVar

from sqlalchemy import insert
from sqlalchemy.exc import DataError, IntegrityError

from app.storage.db import SessionFactory, first_line
from app.storage.spool import DiskSpool, MemorySpool, Row, Spool
from app.storage.tables import Base

logger = logging.getLogger(__name__)


class SpooledSqlWriter:
    """Rows of one table (`model`, set by each subclass): memory queue -> spool -> SQL, on two
    daemon threads; `add` never blocks on SQL or on the disk.

    Counters: `written` rows in SQL, `failed` write attempts (each retried, nothing lost),
    `dropped` rows lost past a bound (reported through `on_drop`). `on_failure` hears of each
    failed attempt; the writer backs off (up to `max_backoff_seconds`) and retries the same
    segment, so logging resumes by itself when the database comes back.
    """

    model: ClassVar[type[Base]]

    def __init__(
        self,
        session_factory: SessionFactory,
        *,
        spool_dir: Path | None = None,
        spool_max_bytes: int,
        capacity: int = 10_000,
        flush_seconds: float = 0.2,
        max_backoff_seconds: float = 5.0,
        on_failure: Callable[[int], None] | None = None,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        self._session_factory = session_factory
        self._table = self.model.__tablename__
        self._queue: collections.deque[Row] = collections.deque()
        self._capacity = capacity
        self._flush_seconds = flush_seconds
        self._max_backoff_seconds = max_backoff_seconds
        self._on_failure = on_failure
        self._on_drop = on_drop
        self._condition = threading.Condition()
        self._closing = False
        self._moving = 0  # rows the spooler took from the queue and has not spooled yet
        self._adopted_at = 0.0
        self.written = 0
        self.failed = 0
        self.dropped = 0
        self.last_error: str | None = None
        self.spool = self._open_spool(spool_dir, max_bytes=spool_max_bytes)
        self._spooler = threading.Thread(target=self._spool_loop, name="request-log-spool")
        self._writer = threading.Thread(target=self._write_loop, name="request-log-writer")
        for thread in (self._spooler, self._writer):
            thread.daemon = True
            thread.start()

    def add(self, row: Row) -> None:
        """Queue one row (column name -> value) for the table."""
        with self._condition:
            if self._closing:
                return
            if len(self._queue) >= self._capacity:
                self._queue.popleft()
                dropped = True
            else:
                dropped = False
            self._queue.append(row)
        if dropped:
            self._drop(1)

    def pending(self) -> int:
        """Rows recorded but not yet in SQL (memory queue and spool)."""
        with self._condition:
            queued = len(self._queue) + self._moving
        return queued + self.spool.pending_rows()

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every recorded row is in SQL; False when some are still waiting (the
        database is down: they stay spooled) after `timeout`."""
        deadline = time.monotonic() + timeout
        while self.pending():
            with self._condition:
                self._condition.notify_all()
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.01)
        return True

    def close(self, timeout: float = 5.0) -> None:
        """Spool what is queued, give the writer `timeout` to put it in SQL, then stop; rows
        still spooled on disk are written by the next process that starts."""
        with self._condition:
            self._closing = True
            self._condition.notify_all()
        self._spooler.join(timeout)
        self._writer.join(timeout)
        left = self.spool.pending_rows()
        if left:
            where = "on disk for the next start" if isinstance(self.spool, DiskSpool) else "lost"
            logger.warning("%s: %d rows not written at shutdown (%s)", self._table, left, where)
            if isinstance(self.spool, MemorySpool):
                self._drop(left)
        self.spool.close()

    # --- the two threads -----------------------------------------------------------------

    def _spool_loop(self) -> None:
        while True:
            with self._condition:
                if not self._queue and not self._closing:
                    self._condition.wait(self._flush_seconds)
                batch = list(self._queue)
                self._queue.clear()
                self._moving = len(batch)
                closing = self._closing
            if batch:
                try:
                    lost = self.spool.append(batch)
                except OSError as error:  # disk full or gone: these rows cannot be kept
                    logger.error("%s spool write failed: %s", self._table, error)
                    lost = len(batch)
                if lost:
                    self._drop(lost)
                with self._condition:
                    self._moving = 0
                    self._condition.notify_all()
            if closing and not batch:
                return

    def _write_loop(self) -> None:
        backoff = 0.0
        while True:
            with self._condition:
                closing = self._closing
            segment = self.spool.oldest()
            if segment is None:
                if closing and not self._spooler.is_alive():
                    return
                with self._condition:
                    self._condition.wait(self._flush_seconds)
                if isinstance(self.spool, DiskSpool) and time.monotonic() > self._adopted_at + 5:
                    self._adopted_at = time.monotonic()
                    self.spool.adopt_orphans()  # rows a stopped worker left behind
                continue
            if self._write(segment.rows):
                self.spool.remove(segment)
                backoff = 0.0
                continue
            if closing:
                return  # the rest stays spooled
            # A dead DB fails every attempt; pause so the writer does not spin on it.
            backoff = min(max(backoff * 2, 0.25), self._max_backoff_seconds)
            with self._condition:
                self._condition.wait_for(lambda: self._closing, backoff)

    def _write(self, rows: list[Row]) -> bool:
        """Insert `rows` in one transaction. A database that refuses the data itself (a value
        too long, a constraint) would refuse it forever and block every later row: then the
        rows go one by one and only those refused are dropped (counted)."""
        if not rows:
            return True
        try:
            self._insert(rows)
        except (DataError, IntegrityError):
            refused = 0
            for row in rows:
                try:
                    self._insert([row])
                except (DataError, IntegrityError) as error:
                    refused += 1
                    logger.error("%s row refused by the database, dropped: %s", self._table,
                                 first_line(error))  # fmt: skip
                except Exception as error:
                    return self._failed(error, count=len(rows))
            self._drop(refused)
            self.written += len(rows) - refused
            return True
        except Exception as error:  # any driver/network error: count, keep the rows, retry
            return self._failed(error, count=len(rows))
        if self.last_error is not None:
            logger.info("%s writes recovered", self._table)
            self.last_error = None
        self.written += len(rows)
        return True

    def _insert(self, rows: list[Row]) -> None:
        with self._session_factory.begin() as session:
            session.execute(insert(self.model), rows)

    def _failed(self, error: Exception, *, count: int) -> bool:
        self.failed += 1
        message = first_line(error)
        if self.last_error is None:
            logger.warning(
                "%s write failed (%d rows kept in the spool): %s", self._table, count, message
            )
        self.last_error = message
        if self._on_failure is not None:
            try:
                self._on_failure(1)
            except Exception:
                logger.exception("write failure callback raised")
        return False

    def _drop(self, count: int) -> None:
        self.dropped += count
        if self._on_drop is not None:
            try:
                self._on_drop(count)
            except Exception:
                logger.exception("drop callback raised")

    def _open_spool(self, directory: Path | None, *, max_bytes: int) -> Spool:
        if directory is not None:
            try:
                return DiskSpool(directory, max_bytes=max_bytes, on_drop=self._drop)
            except OSError as error:
                logger.error(
                    "%s spool directory %s unusable (%s): spooling in memory, at most %d rows",
                    self._table,
                    directory,
                    error,
                    self._capacity,
                )
        return MemorySpool(max_rows=self._capacity)
