"""The model registry as the lifecycle sees it: what SQL records about versions (active, failed,
registered run directories, the served catalog), each write best effort or bounded in time.
No database configured: every read is unreachable and every write a no-op. Knows nothing about
loading or swapping models.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from app.errors import RegistryUnavailableError
from app.lifecycle.versions import list_versions
from app.serving.model import ServingModel
from app.storage import crud
from app.storage.db import SessionFactory, first_line, schema_missing
from tanp.checkpoint import CheckpointError, read_manifest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class RegistryView:
    """What the SQL registry says, or that it could not be read (`reachable` False)."""

    reachable: bool
    active: str | None = None
    active_sha256: str | None = None  # the active version's weights (a name can be reused)
    failed: dict[str, str] = field(default_factory=dict)  # version -> why


@dataclass(frozen=True)
class VersionOverview:
    """One version as the registry and the disk know it."""

    name: str
    status: str  # the registry's status; "unregistered" when only on disk
    serving: bool  # served by this worker
    on_disk: bool
    sha256: str | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    message: str | None = None
    created_at: datetime | None = None
    activated_at: datetime | None = None


class Registry:
    """Reads and writes of the SQL registry for one worker's lifecycle."""

    def __init__(
        self, sessions: SessionFactory | None, *, models_dir: Path, timeout_seconds: float
    ) -> None:
        self.sessions = sessions
        self.models_dir = models_dir
        self.timeout_seconds = timeout_seconds  # REGISTRY_TIMEOUT_SECONDS, for `record_active`
        # versions that broke an invariant while serving -> the reason, until SQL records it
        self._fault_lock = threading.Lock()
        self._faulted: set[str] = set()
        self._pending_fault_marks: dict[str, str] = {}

    @property
    def enabled(self) -> bool:
        """Whether a database is configured (it may still be down)."""
        return self.sessions is not None

    def view(self) -> RegistryView:
        """The registry's active and failed versions; `reachable` False when SQL is down or
        not configured."""
        if self.sessions is None:
            return RegistryView(reachable=False)
        try:
            active = crud.active_weights(self.sessions)
            return RegistryView(
                reachable=True,
                active=None if active is None else active[0],
                active_sha256=None if active is None else active[1],
                failed=crud.failed_versions(self.sessions),
            )
        except Exception as error:  # DB down: the caller changes nothing
            logger.debug("registry unavailable for reconcile: %s", first_line(error))
            return RegistryView(reachable=False)

    def register_run_dirs(self) -> RegistryView:
        """Register every run directory in SQL; returns the registry's view (unreachable
        without a database, or when it is down: logged, the service runs without it)."""
        if self.sessions is None:
            return RegistryView(reachable=False)
        try:
            for name in list_versions(self.models_dir):
                run_dir = self.models_dir / name
                try:
                    manifest: dict[str, Any] | None = read_manifest(run_dir)
                    error = None
                except CheckpointError as failure:
                    manifest, error = None, str(failure)
                crud.register_version(
                    self.sessions, name=name, path=run_dir, manifest=manifest, error=error
                )
        except Exception as error:
            if schema_missing(error):
                logger.error(
                    "the database has no model registry tables (%s): run `tanp-serve migrate` "
                    "or set MIGRATE_ON_START=1; serving without the registry",
                    first_line(error),
                )
            else:
                logger.error(
                    "model registry unavailable (%s); serving without it", first_line(error)
                )
            return RegistryView(reachable=False)
        return self.view()

    def record_active(self, serving: ServingModel, *, previous: str | None) -> None:
        """`serving` as the registry's active version, confirmed by SQL within
        `timeout_seconds`, else RegistryUnavailableError; then the catalog (best effort: the
        service reads its catalog from the model, never from SQL)."""
        sessions = self.sessions
        if sessions is None:
            return
        try:
            call_with_deadline(
                lambda: crud.mark_active(
                    sessions, name=serving.version, path=serving.run_dir, manifest=serving.manifest
                ),
                seconds=self.timeout_seconds,
            )
        except Exception as error:
            if schema_missing(error):
                raise RegistryUnavailableError(
                    f"version {serving.version!r} verified but not activated: the database "
                    "answers but holds no model registry tables (the schema is missing): run "
                    f"`tanp-serve migrate` or set MIGRATE_ON_START=1; still serving {previous!r}."
                ) from error
            raise RegistryUnavailableError(
                f"version {serving.version!r} verified but not activated: the model registry "
                f"could not record it ({first_line(error)}); still serving {previous!r}. "
                "Nothing was changed; retry when the database is back."
            ) from error
        self.refresh_catalog(serving)

    def record_start(self, serving: ServingModel) -> bool:
        """Best effort at start: `serving` as the active version, then its catalog; False when
        SQL refused (a start never fails for the registry's sake)."""
        if self.sessions is None:
            return True
        try:
            crud.mark_active(
                self.sessions, name=serving.version, path=serving.run_dir, manifest=serving.manifest
            )
        except Exception as error:
            logger.warning("could not record %s in the registry: %s", serving.version, error)
            return False
        self.refresh_catalog(serving)
        return True

    def record_pin(self, serving: ServingModel, *, since: datetime, active: str | None) -> bool:
        """`serving` (ACTIVE_MODEL, served unrecorded since `since`) as the active version,
        unless it already is or an activation recorded since then supersedes it; False when
        SQL refused (the caller tries again later)."""
        if self.sessions is None:
            return True
        try:
            if active != serving.version and not crud.activated_since(self.sessions, since):
                crud.mark_active(
                    self.sessions,
                    name=serving.version,
                    path=serving.run_dir,
                    manifest=serving.manifest,
                )
        except Exception as error:
            logger.debug(
                "pinned version %s still not recorded: %s", serving.version, first_line(error)
            )
            return False
        self.refresh_catalog(serving)
        return True

    def refresh_catalog(self, serving: ServingModel) -> None:
        """Best effort: the served model's items, names, URLs and popularity as the catalog."""
        if self.sessions is None:
            return
        rows = [
            crud.CatalogRecord(item_id=item, name=name, url=url, popularity=float(popularity))
            for item, name, url, popularity in zip(
                serving.items,
                serving.names,
                serving.urls,
                serving.popularity.tolist(),
                strict=True,
            )
        ]
        try:
            crud.refresh_catalog(self.sessions, rows=rows)
        except Exception as error:  # the DB is optional for serving: log and go on
            logger.warning("could not store the catalog of %s: %s", serving.version, error)

    def record_failure(self, version: str, *, message: str) -> bool:
        """Best effort: `version` marked failed with `message` (and its manifest's sha256 when
        it reads, so a restart keeps the mark); False when SQL refused."""
        if self.sessions is None:
            return True
        run_dir = self.models_dir / version
        try:
            manifest: dict[str, Any] | None = read_manifest(run_dir)
        except CheckpointError:
            manifest = None
        try:
            crud.mark_failed(
                self.sessions, name=version, path=run_dir, message=message, manifest=manifest
            )
        except Exception as error:
            logger.warning("could not record failed version %s: %s", version, first_line(error))
            return False
        return True

    def mark_fault(self, version: str, *, reason: str) -> None:
        """A served version broke an invariant: mark it failed, once per version, off the
        caller's thread; a mark SQL refuses stays pending for `flush_fault_marks`."""
        with self._fault_lock:
            if version in self._faulted:
                return
            self._faulted.add(version)
            self._pending_fault_marks[version] = reason
        threading.Thread(target=self.flush_fault_marks, name="model-fault", daemon=True).start()

    def flush_fault_marks(self) -> None:
        """Write the pending failed marks; those SQL refuses stay pending."""
        with self._fault_lock:
            pending = dict(self._pending_fault_marks)
        for version, message in pending.items():
            if self.record_failure(version, message=message):
                with self._fault_lock:
                    self._pending_fault_marks.pop(version, None)

    def overview(self, *, serving: str | None) -> tuple[str, list[VersionOverview]]:
        """The registry's state ('ok', 'disabled', or why it could not be read) and every
        version it records or the disk holds; `serving` is this worker's version."""
        on_disk = list_versions(self.models_dir)
        found: dict[str, VersionOverview] = {}
        state = "disabled" if self.sessions is None else "ok"
        if self.sessions is not None:
            try:
                records = crud.registered_versions(self.sessions)
            except Exception as error:  # the registry is optional: list what is on disk
                records = []
                state = f"unavailable: {first_line(error)}"
            for record in records:
                found[record.name] = VersionOverview(
                    name=record.name,
                    status=record.status,
                    serving=record.name == serving,
                    on_disk=record.name in on_disk,
                    sha256=record.sha256,
                    metrics=record.metrics,
                    message=record.message,
                    created_at=record.created_at,
                    activated_at=record.activated_at,
                )
        for name in on_disk:
            if name not in found:
                found[name] = VersionOverview(
                    name=name, status="unregistered", serving=name == serving, on_disk=True
                )
        return state, list(found.values())


def call_with_deadline(function: Callable[[], object], *, seconds: float) -> None:
    """Run `function` in a daemon thread and wait at most `seconds` for it: its exception is
    raised here, and TimeoutError when it has not returned (a hung database connection never
    holds an admin call, or the lifecycle lock, for longer)."""
    failure: list[BaseException] = []

    def run() -> None:
        try:
            function()
        except BaseException as error:
            failure.append(error)

    thread = threading.Thread(target=run, name="registry-write", daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise TimeoutError(f"no answer within {seconds:g} s")
    if failure:
        raise failure[0]
