"""SQL reads and writes of the model registry (one row per run directory, at most one `active`)
and of the served catalog: plain functions over a session factory with keyword-only data,
raising on database errors (callers decide how to degrade). Knows nothing about loading models,
settings or HTTP; the request log and the audit have spooled writers of their own.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import delete, insert, select, update
from sqlalchemy.orm import Session

from app.storage.db import SessionFactory
from app.storage.tables import CatalogItemRow, ModelVersion

STATUS_AVAILABLE = "available"
STATUS_ACTIVE = "active"
STATUS_FAILED = "failed"
CATALOG_BATCH = 1_000


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


@dataclass(frozen=True)
class CatalogRecord:
    """A catalog row as plain data."""

    item_id: str
    name: str | None
    url: str | None
    popularity: float


# --- model versions ------------------------------------------------------------------------


def register_version(
    sessions: SessionFactory,
    *,
    name: str,
    path: Path,
    manifest: dict[str, Any] | None,
    error: str | None = None,
) -> VersionRecord:
    """Insert or refresh the row of one run directory from its manifest; `error` (a manifest
    that could not be read) marks it `failed` with the reason."""
    with sessions.begin() as session:
        row = _upsert(session, name=name, path=path, manifest=manifest, error=error)
        session.flush()
        return _record(row)


def mark_active(
    sessions: SessionFactory, *, name: str, path: Path, manifest: dict[str, Any]
) -> VersionRecord:
    """Record `name` as the one active version (the previous active becomes available)."""
    with sessions.begin() as session:
        session.execute(
            update(ModelVersion)
            .where(ModelVersion.status == STATUS_ACTIVE, ModelVersion.name != name)
            .values(status=STATUS_AVAILABLE)
        )
        row = _upsert(session, name=name, path=path, manifest=manifest, error=None)
        row.status, row.message = STATUS_ACTIVE, None
        row.activated_at = datetime.now(UTC)
        session.flush()
        return _record(row)


def mark_failed(
    sessions: SessionFactory,
    *,
    name: str,
    path: Path,
    message: str,
    manifest: dict[str, Any] | None = None,
) -> VersionRecord:
    """Record why a version could not be loaded or answer (with its `manifest` when it reads:
    the mark then belongs to those weights and survives re-registration)."""
    return register_version(sessions, name=name, path=path, manifest=manifest, error=message)


def active_version(sessions: SessionFactory) -> str | None:
    """The registry's active version name, or None when nothing was ever activated."""
    active = active_weights(sessions)
    return None if active is None else active[0]


def active_weights(sessions: SessionFactory) -> tuple[str, str | None] | None:
    """The registry's active version and its weights' sha256, or None when nothing was ever
    activated (a retrain may reuse a name: the sha says which weights are active)."""
    with sessions() as session:
        row = session.execute(
            select(ModelVersion.name, ModelVersion.sha256)
            .where(ModelVersion.status == STATUS_ACTIVE)
            .order_by(ModelVersion.activated_at.desc())
            .limit(1)
        ).one_or_none()
        return None if row is None else (row[0], row[1])


def activated_since(sessions: SessionFactory, moment: datetime) -> bool:
    """Whether any version was activated after `moment`."""
    with sessions() as session:
        found = session.scalars(
            select(ModelVersion.name).where(ModelVersion.activated_at > moment).limit(1)
        ).first()
        return found is not None


def failed_versions(sessions: SessionFactory) -> dict[str, str]:
    """Versions marked failed -> the recorded reason."""
    with sessions() as session:
        rows = session.execute(
            select(ModelVersion.name, ModelVersion.message).where(
                ModelVersion.status == STATUS_FAILED
            )
        ).all()
        return {name: message or "" for name, message in rows}


def registered_versions(sessions: SessionFactory) -> list[VersionRecord]:
    """Every registered version, oldest first."""
    with sessions() as session:
        rows = session.scalars(
            select(ModelVersion).order_by(ModelVersion.created_at, ModelVersion.name)
        ).all()
        return [_record(row) for row in rows]


def _record(row: ModelVersion) -> VersionRecord:
    return VersionRecord(
        name=row.name,
        path=row.path,
        sha256=row.sha256,
        metrics=dict(row.metrics or {}),
        status=row.status,
        message=row.message,
        created_at=_utc(row.created_at),
        activated_at=None if row.activated_at is None else _utc(row.activated_at),
    )


def finite_json(value: Any) -> Any:
    """`value` with every non-finite float (NaN, infinity: a metric of a run whose users had
    nothing to score) as None, which JSON and Postgres' json type both store."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {str(key): finite_json(entry) for key, entry in value.items()}
    if isinstance(value, list | tuple):
        return [finite_json(entry) for entry in value]
    return value


def _utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes (stored as UTC): aware again, so the API's date-times
    always carry their offset."""
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


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
        sha256 = str(manifest.get("weights_sha256") or "") or None
        # A failed mark belongs to the weights it was found on: it survives re-registration
        # (every restart) and is cleared only by other weights in the folder (a retrain) or
        # by an explicit activation (`mark_active`).
        if row.status == STATUS_FAILED and error is None and sha256 != row.sha256:
            row.status, row.message = STATUS_AVAILABLE, None
        row.sha256 = sha256
        metrics = manifest.get("metrics")
        row.metrics = finite_json(metrics) if isinstance(metrics, dict) else {}
        row.created_at = _parse_time(manifest.get("created_at"))
    if error is not None:
        row.status, row.message = STATUS_FAILED, error
    return row


# --- item catalog --------------------------------------------------------------------------


def catalog_rows(sessions: SessionFactory) -> list[CatalogRecord]:
    """The stored catalog, ordered by item id."""
    with sessions() as session:
        rows = session.scalars(select(CatalogItemRow).order_by(CatalogItemRow.item_id)).all()
        return [
            CatalogRecord(
                item_id=row.item_id, name=row.name, url=row.url, popularity=row.popularity
            )
            for row in rows
        ]


def replace_catalog(sessions: SessionFactory, *, rows: list[CatalogRecord]) -> int:
    """Replace the whole catalog with `rows`; returns how many were written."""
    values = [asdict(row) for row in rows]
    with sessions.begin() as session:
        session.execute(delete(CatalogItemRow))
        for start in range(0, len(values), CATALOG_BATCH):
            session.execute(insert(CatalogItemRow), values[start : start + CATALOG_BATCH])
    return len(values)


def refresh_catalog(sessions: SessionFactory, *, rows: list[CatalogRecord]) -> bool:
    """`replace_catalog` unless the catalog already holds exactly `rows`; True when written."""
    if catalog_rows(sessions) == sorted(rows, key=lambda row: row.item_id):
        return False
    replace_catalog(sessions, rows=rows)
    return True
