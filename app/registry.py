"""The SQL side of model versions, the catalog and the request log.

Model versions: one row per run directory under MODELS_DIR, at most one `active`. The catalog
is refreshed from the served model's items. `SqlRequestLog` is the request-log sink: a bounded
queue drained by one background thread, so a slow or dead database never delays or fails a
recommendation (failed writes are counted through a callback and dropped).
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, delete, insert, select, update
from sqlalchemy.orm import Session, sessionmaker

from app.db import database_status, make_engine, make_session_factory, run_migrations
from app.holder import ServingModel, list_versions
from app.models_sql import AdminAudit, CatalogItem, ModelVersion, RequestLogRow
from app.request_log import RequestLogEntry
from app.settings import Settings
from tanp.checkpoint import CheckpointError, read_manifest

logger = logging.getLogger(__name__)

SessionFactory = sessionmaker[Session]

STATUS_AVAILABLE = "available"
STATUS_ACTIVE = "active"
STATUS_FAILED = "failed"


@dataclass(frozen=True)
class VersionRecord:
    """A registry row as plain data (safe to use after its session closed)."""

    name: str
    path: str
    sha256: str | None
    metrics: dict[str, Any]
    status: str
    message: str | None
    created_at: datetime
    activated_at: datetime | None

    def to_json(self) -> dict[str, Any]:
        values = asdict(self)
        for key in ("created_at", "activated_at"):
            moment = values[key]
            values[key] = moment.isoformat() if moment is not None else None
        return values


def _record(row: ModelVersion) -> VersionRecord:
    return VersionRecord(
        name=row.name,
        path=row.path,
        sha256=row.sha256,
        metrics=dict(row.metrics or {}),
        status=row.status,
        message=row.message,
        created_at=row.created_at,
        activated_at=row.activated_at,
    )


def _parse_time(value: object) -> datetime:
    if isinstance(value, str):
        try:
            moment = datetime.fromisoformat(value)
        except ValueError:
            return datetime.now(UTC)
        return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
    return datetime.now(UTC)


def _upsert(
    session: Session,
    *,
    name: str,
    path: Path,
    manifest: dict[str, Any] | None,
    error: str | None,
) -> ModelVersion:
    row = session.scalars(select(ModelVersion).where(ModelVersion.name == name)).one_or_none()
    if row is None:
        row = ModelVersion(name=name, path=str(path), metrics={}, status=STATUS_AVAILABLE)
        session.add(row)
    row.path = str(path)
    if manifest is not None:
        row.sha256 = str(manifest.get("weights_sha256") or "") or None
        metrics = manifest.get("metrics")
        row.metrics = dict(metrics) if isinstance(metrics, dict) else {}
        row.created_at = _parse_time(manifest.get("created_at"))
        if row.status == STATUS_FAILED and error is None:
            row.status, row.message = STATUS_AVAILABLE, None
    if error is not None:
        row.status, row.message = STATUS_FAILED, error
    return row


def register_run(session_factory: SessionFactory, run_dir: Path) -> VersionRecord:
    """Insert or refresh the row of one run directory from its manifest (no weights hashing).

    An unreadable manifest is registered as `failed` with the reason, not raised.
    """
    try:
        manifest: dict[str, Any] | None = read_manifest(run_dir)
        error = None
    except CheckpointError as failure:
        manifest, error = None, str(failure)
    with session_factory.begin() as session:
        row = _upsert(session, name=run_dir.name, path=run_dir, manifest=manifest, error=error)
        session.flush()
        return _record(row)


def discover_versions(session_factory: SessionFactory, models_dir: Path) -> list[VersionRecord]:
    """Register every run directory under MODELS_DIR (oldest first); returns their rows."""
    return [register_run(session_factory, models_dir / name) for name in list_versions(models_dir)]


def mark_active(session_factory: SessionFactory, serving: ServingModel) -> VersionRecord:
    """Record `serving` as the one active version (the previous active becomes available)."""
    name = serving.version
    with session_factory.begin() as session:
        session.execute(
            update(ModelVersion)
            .where(ModelVersion.status == STATUS_ACTIVE, ModelVersion.name != name)
            .values(status=STATUS_AVAILABLE)
        )
        row = _upsert(
            session,
            name=name,
            path=serving.loaded.run_dir,
            manifest=serving.loaded.manifest,
            error=None,
        )
        row.status, row.message = STATUS_ACTIVE, None
        row.activated_at = datetime.now(UTC)
        session.flush()
        return _record(row)


def mark_failed(
    session_factory: SessionFactory, *, name: str, path: Path, message: str
) -> VersionRecord:
    """Record why a version could not be loaded (an active version stays active elsewhere)."""
    with session_factory.begin() as session:
        row = _upsert(session, name=name, path=path, manifest=None, error=message)
        session.flush()
        return _record(row)


def active_version(session_factory: SessionFactory) -> str | None:
    """The registry's active version name, or None when nothing was ever activated."""
    with session_factory() as session:
        return session.scalars(
            select(ModelVersion.name)
            .where(ModelVersion.status == STATUS_ACTIVE)
            .order_by(ModelVersion.activated_at.desc())
            .limit(1)
        ).one_or_none()


def list_registered(session_factory: SessionFactory) -> list[VersionRecord]:
    """Every registered version, oldest first."""
    with session_factory() as session:
        rows = session.scalars(
            select(ModelVersion).order_by(ModelVersion.created_at, ModelVersion.name)
        ).all()
        return [_record(row) for row in rows]


def write_audit(
    session_factory: SessionFactory,
    *,
    actor: str,
    action: str,
    target: str | None,
    allowed: bool,
    status_code: int,
    message: str | None,
    client_ip: str | None,
) -> None:
    """Append one admin audit row (raises on DB errors; callers decide how to degrade)."""
    with session_factory.begin() as session:
        session.add(
            AdminAudit(
                actor=actor,
                action=action,
                target=None if target is None else target[:256],
                allowed=allowed,
                status_code=status_code,
                message=message,
                client_ip=None if client_ip is None else client_ip[:64],
            )
        )


def read_artist_urls(path: Path) -> dict[str, str]:
    """HetRec `artists.dat` (id, name, url, pictureURL; tab separated) -> {id: url}."""
    urls: dict[str, str] = {}
    with path.open(encoding="utf-8", errors="replace") as handle:
        next(handle, None)
        for line in handle:
            fields = line.rstrip("\n").split("\t")
            if len(fields) >= 3 and fields[2]:
                urls[fields[0]] = fields[2]
    return urls


def load_catalog(
    session_factory: SessionFactory, serving: ServingModel, *, urls: dict[str, str] | None = None
) -> int:
    """Replace the catalog with the served model's items (names from the checkpoint)."""
    buffer = serving.loaded.model.get_buffer("item_popularity")
    popularity = buffer.detach().cpu().numpy().tolist()
    rows = [
        {
            "item_id": item,
            "name": serving.name_of(index),
            "url": (urls or {}).get(item),
            "popularity": float(popularity[index]),
        }
        for index, item in enumerate(serving.items)
    ]
    with session_factory.begin() as session:
        session.execute(delete(CatalogItem))
        for start in range(0, len(rows), 1_000):
            session.execute(insert(CatalogItem), rows[start : start + 1_000])
    return len(rows)


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
            message = str(error).strip().splitlines()[0] if str(error).strip() else repr(error)
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


@dataclass
class Persistence:
    """What the lifespan opens on the SQL side; `status` is 'ok' or 'down: <reason>'."""

    engine: Engine
    session_factory: SessionFactory
    request_log: SqlRequestLog
    status: str
    active: str | None
    catalog_urls: dict[str, str] | None

    def close(self) -> None:
        self.request_log.close()
        self.engine.dispose()


def find_artists_file(data_dir: Path | None) -> Path | None:
    """HetRec `artists.dat` under TANP_DATA_DIR (directly or in `lastfm/`), if present."""
    if data_dir is None:
        return None
    for candidate in (data_dir / "artists.dat", data_dir / "lastfm" / "artists.dat"):
        if candidate.is_file():
            return candidate
    return None


def open_persistence(
    settings: Settings, *, on_log_failure: Callable[[int], None] | None = None
) -> Persistence:
    """Blocking, never raises for a down DB: engine, optional migrations, version discovery,
    the registry's active version and the request-log writer. A DB that is down is reported
    in `status` and the service runs without it (request-log writes are counted as failed)."""
    engine = make_engine(settings.database_url)
    session_factory = make_session_factory(engine)
    if settings.migrate_on_start:
        try:
            run_migrations(settings.database_url)
        except Exception as error:  # a down DB must not stop the service from starting
            logger.error("migrations failed at start (continuing without): %s", error)
    active: str | None = None
    try:
        discover_versions(session_factory, settings.models_dir)
        active = active_version(session_factory)
        status = "ok"
    except Exception as error:
        status = database_status(engine)
        if status == "ok":
            status = f"down: {str(error).strip().splitlines()[0][:200]}"
        logger.error(
            "model registry unavailable (%s); serving without it. Run `tanp-serve migrate` "
            "or set MIGRATE_ON_START=1 if the schema is missing",
            status,
        )
    urls: dict[str, str] | None = None
    artists = find_artists_file(settings.data_dir)
    if artists is not None:
        try:
            urls = read_artist_urls(artists)
        except OSError as error:
            logger.warning("could not read artist urls from %s: %s", artists, error)
    return Persistence(
        engine=engine,
        session_factory=session_factory,
        request_log=SqlRequestLog(session_factory, on_failure=on_log_failure),
        status=status,
        active=active,
        catalog_urls=urls,
    )


def record_startup_model(persistence: Persistence, serving: ServingModel) -> None:
    """After the startup load: make the served version the registry's active one (so the
    reconcile loop does not undo an ACTIVE_MODEL pin) and refresh the catalog. Best effort."""
    try:
        if persistence.active != serving.version:
            mark_active(persistence.session_factory, serving)
            persistence.active = serving.version
        refresh_catalog(persistence.session_factory, serving, urls=persistence.catalog_urls)
    except Exception as error:
        logger.warning("could not record the startup model in the registry: %s", error)


def refresh_catalog(
    session_factory: SessionFactory, serving: ServingModel, *, urls: dict[str, str] | None
) -> None:
    """`load_catalog` unless the catalog already holds exactly this model's items."""
    with session_factory() as session:
        stored = set(session.scalars(select(CatalogItem.item_id)))
    if stored != set(serving.items):
        load_catalog(session_factory, serving, urls=urls)
