"""Rows for SQL that must survive a database outage: `SpooledSqlWriter` (memory queue -> spool
-> SQL, on two threads of its own), over segment files a later worker adopts (`DiskSpool`) or
memory (`MemorySpool`); rows are dropped, and counted, only past the bounds. The protocol:
docs/spool.md. Knows nothing about what the rows mean.
"""

from __future__ import annotations

import collections
import fcntl
import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, ClassVar, Protocol

from sqlalchemy import insert
from sqlalchemy.exc import DataError, IntegrityError

from app.storage.db import SessionFactory, first_line
from app.storage.tables import Base

logger = logging.getLogger(__name__)

SEGMENT_ROWS = 2_000  # rows per spool segment: one SQL transaction when it is written
_DATETIME = "$datetime"


Row = dict[str, Any]


@dataclass(frozen=True)
class Segment:
    """A batch of spooled rows, written to SQL in one transaction."""

    key: str
    rows: list[Row]


class Spool(Protocol):
    """Rows waiting for SQL, oldest segment first; thread-safe."""

    def append(self, rows: list[Row]) -> int:
        """Keep `rows`; returns how many did not fit (dropped)."""
        ...

    def oldest(self) -> Segment | None:
        """The oldest segment (the one being filled is closed first when it is the only
        one), None when empty; it stays until `remove`."""
        ...

    def remove(self, segment: Segment) -> None: ...

    def pending_rows(self) -> int: ...

    def close(self) -> None: ...


class MemorySpool:
    """The spool in memory, bounded by rows; lost with the process."""

    def __init__(self, *, max_rows: int) -> None:
        self._max_rows = max_rows
        self._lock = threading.Lock()
        self._segments: collections.deque[Segment] = collections.deque()
        self._rows = 0

    def append(self, rows: list[Row]) -> int:
        with self._lock:
            room = max(self._max_rows - self._rows, 0)
            kept = rows[:room]
            for start in range(0, len(kept), SEGMENT_ROWS):
                self._segments.append(Segment(uuid.uuid4().hex, kept[start : start + SEGMENT_ROWS]))
            self._rows += len(kept)
            return len(rows) - len(kept)

    def oldest(self) -> Segment | None:
        with self._lock:
            return self._segments[0] if self._segments else None

    def remove(self, segment: Segment) -> None:
        with self._lock:
            if self._segments and self._segments[0].key == segment.key:
                self._segments.popleft()
                self._rows -= len(segment.rows)

    def pending_rows(self) -> int:
        with self._lock:
            return self._rows

    def close(self) -> None:
        return None


class DiskSpool:
    """The spool as JSON-lines segment files in one directory, bounded by bytes.

    Each process owns the files named after its owner id and holds an exclusive `flock` on its
    `<owner>.lock` file while it lives. The lock of a process that died (even by SIGKILL) is
    free: whoever takes it next adopts that owner's segments by renaming them to its own. A line
    torn by a crash mid-write is skipped and counted as dropped.
    """

    def __init__(
        self,
        directory: Path,
        *,
        max_bytes: int,
        segment_rows: int = SEGMENT_ROWS,
        on_drop: Callable[[int], None] | None = None,
    ) -> None:
        directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.directory = directory
        self._max_bytes = max_bytes
        self._segment_rows = segment_rows
        self._on_drop = on_drop
        self.owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._lock_file = (directory / f"{self.owner}.lock").open("w")
        fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        self._lock = threading.Lock()
        self._sequence = 0
        self._open: tuple[Path, IO[str]] | None = None
        self._open_rows = 0
        self._closed: collections.deque[Path] = collections.deque()
        self._bytes = 0
        self._rows = 0
        self.adopt_orphans()

    def append(self, rows: list[Row]) -> int:
        lines = [json.dumps(row, default=_encode) + "\n" for row in rows]
        with self._lock:
            dropped = 0
            for line in lines:
                size = len(line.encode("utf-8"))
                if self._bytes + size > self._max_bytes:
                    dropped += 1
                    continue
                if self._open is not None and self._open_rows >= self._segment_rows:
                    self._close_open_segment()
                if self._open is None:
                    path = self._next_path()
                    self._open = (path, path.open("a", encoding="utf-8"))
                self._open[1].write(line)
                self._open_rows += 1
                self._bytes += size
                self._rows += 1
            if self._open is not None:
                self._open[1].flush()  # in the page cache: survives the process, not the host
            return dropped

    def oldest(self) -> Segment | None:
        with self._lock:
            if not self._closed and self._open_rows:
                self._close_open_segment()
            while self._closed:
                path = self._closed[0]
                rows = self._read(path)
                if rows is not None:
                    return Segment(str(path), rows)
                self._closed.popleft()  # vanished under us: nothing to write
            return None

    def remove(self, segment: Segment) -> None:
        path = Path(segment.key)
        with self._lock:
            if self._closed and self._closed[0] == path:
                self._closed.popleft()
            size = path.stat().st_size if path.exists() else 0
            path.unlink(missing_ok=True)
            self._bytes = max(self._bytes - size, 0)
            self._rows = max(self._rows - len(segment.rows), 0)

    def pending_rows(self) -> int:
        with self._lock:
            return self._rows

    def adopt_orphans(self) -> int:
        """Take over the segments of owners whose process is gone; returns how many rows."""
        adopted = 0
        for lock_path in sorted(self.directory.glob("*.lock")):
            owner = lock_path.stem
            if owner == self.owner:
                continue
            try:
                handle = lock_path.open("a")
            except OSError:
                continue
            with handle:
                try:
                    fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                except OSError:
                    continue  # its owner is alive
                for path in sorted(self.directory.glob(f"{owner}-*.jsonl")):
                    adopted += self._adopt(path)
                lock_path.unlink(missing_ok=True)
        if adopted:
            logger.info("spool %s: adopted %d rows of a stopped worker", self.directory, adopted)
        return adopted

    def close(self) -> None:
        with self._lock:
            self._close_open_segment()
            if self._rows == 0:
                Path(self._lock_file.name).unlink(missing_ok=True)
            # else the lock file stays, freed with the process: the next start adopts the rest
            self._lock_file.close()

    def _adopt(self, path: Path) -> int:
        with self._lock:
            target = self._next_path()
            try:
                path.rename(target)
            except OSError:
                return 0  # another worker adopted it first
            rows = self._read(target) or []
            if not rows:
                target.unlink(missing_ok=True)
                return 0
            self._closed.append(target)
            self._bytes += target.stat().st_size
            self._rows += len(rows)
            return len(rows)

    def _close_open_segment(self) -> None:
        if self._open is not None:
            self._open[1].close()
            if self._open_rows:
                self._closed.append(self._open[0])
            else:
                self._open[0].unlink(missing_ok=True)
        self._open = None
        self._open_rows = 0

    def _next_path(self) -> Path:
        self._sequence += 1
        return self.directory / f"{self.owner}-{self._sequence:09d}.jsonl"

    def _read(self, path: Path) -> list[Row] | None:
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return None
        rows: list[Row] = []
        torn = 0
        for line in text.splitlines():
            try:
                row = json.loads(line, object_hook=_decode)
            except (ValueError, TypeError):
                torn += 1
                continue
            rows.append(row)
        if torn:
            logger.warning("spool: %d unreadable rows in %s dropped", torn, path)
            if self._on_drop is not None:
                self._on_drop(torn)
        return rows


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


def _encode(value: object) -> object:
    if isinstance(value, datetime):
        return {_DATETIME: value.isoformat()}
    raise TypeError(f"cannot spool {type(value).__name__}")


def _decode(value: dict[str, Any]) -> object:
    if set(value) == {_DATETIME}:
        return datetime.fromisoformat(value[_DATETIME])
    return value
