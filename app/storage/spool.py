"""Where rows wait for SQL: segment files on disk that a later worker adopts when this one dies
(`DiskSpool`, bounded by bytes) or memory (`MemorySpool`, bounded by rows). The protocol:
docs/spool.md. Knows nothing about SQL or about what the rows mean.
"""

from __future__ import annotations

import collections
import fcntl
import json
import logging
import os
import stat
import tempfile
import threading
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Protocol

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
        missing = [path for path in (directory, *directory.parents) if not path.exists()]
        for path in reversed(missing):  # each folder we create is ours alone
            path.mkdir(mode=0o700, exist_ok=True)
        check_private(directory)
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


def check_private(directory: Path) -> None:
    """PermissionError unless `directory` is ours alone: owned by this user and writable by
    no one else, and every folder above it owned by us or root and writable by no one else
    (or sticky, like /tmp). Rows read back from a spool are written to SQL as they are: a
    folder another user can write to would let them plant audit or request-log rows. The
    system's temporary folder is trusted when root owns it, sticky or not (a Kubernetes
    emptyDir at /tmp is 0777): the folders we make in it are checked."""
    uid = os.geteuid()
    temporary = Path(tempfile.gettempdir()).resolve()
    info = directory.stat()
    if info.st_uid != uid or info.st_mode & 0o022:
        raise PermissionError(
            f"spool directory {directory} must belong to uid {uid} and be writable by it "
            f"alone (owner {info.st_uid}, mode {stat.S_IMODE(info.st_mode):o})"
        )
    for parent in directory.resolve().parents:
        info = parent.stat()
        shared = info.st_mode & 0o022 and not info.st_mode & stat.S_ISVTX
        if parent == temporary and info.st_uid == 0:
            continue
        if info.st_uid not in (uid, 0) or shared:
            raise PermissionError(
                f"spool directory {directory} sits in {parent}, which another user can change "
                f"(owner {info.st_uid}, mode {stat.S_IMODE(info.st_mode):o})"
            )


def _encode(value: object) -> object:
    if isinstance(value, datetime):
        return {_DATETIME: value.isoformat()}
    raise TypeError(f"cannot spool {type(value).__name__}")


def _decode(value: dict[str, Any]) -> object:
    if set(value) == {_DATETIME}:
        return datetime.fromisoformat(value[_DATETIME])
    return value
