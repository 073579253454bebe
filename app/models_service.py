"""The model lifecycle of one worker: start, activate (admin reload), follow (other workers).

Every path goes through the same steps: resolve the version name under MODELS_DIR
(`app.versions`), load it beside the current model and verify it (sha256, shapes, manifest
probe), record it in SQL (active version, catalog), swap it in, announce it. `start` and
`activate` do all of them; `follow` (a version another worker announced, or the registry's
active version found by the reconcile loop) only loads, verifies and swaps, because the worker
that activated it recorded and announced it. A refused version leaves the old model serving.
SQL and Redis are optional: their failures are logged and never stop a swap.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from app import crud
from app.broadcast import ModelBroadcast
from app.db import SessionFactory, first_line
from app.errors import ModelRefusedError, ServingError
from app.holder import ModelHolder, ServingModel
from app.schemas import ModelsResponse, VersionInfo
from app.versions import list_versions, newest_version, resolve_version
from tanp.checkpoint import CheckpointError, read_manifest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Activation:
    version: str
    previous: str | None
    device: str


def choose_startup_version(
    models_dir: Path, *, pinned: str | None, registry_active: str | None
) -> str | None:
    """`pinned` (ACTIVE_MODEL) when set, else the registry's active version when it is still
    on disk, else the newest run directory under MODELS_DIR, else None."""
    if pinned:
        return pinned
    versions = list_versions(models_dir)
    if registry_active is not None and registry_active in versions:
        return registry_active
    return versions[-1] if versions else None


class ModelService:
    """Owns which model this worker serves; one per worker process."""

    def __init__(
        self,
        *,
        holder: ModelHolder,
        models_dir: Path,
        device: str,
        sessions: SessionFactory | None,
        broadcast: ModelBroadcast | None,
        worker: str,
        reconcile_seconds: float,
        on_swap: Callable[[ServingModel], None] | None = None,
    ) -> None:
        self.holder = holder
        self.models_dir = models_dir
        self.device = device
        self.sessions = sessions
        self.broadcast = broadcast
        self.worker = worker
        self.reconcile_seconds = reconcile_seconds
        self._on_swap = on_swap
        # Serialises start / activate / follow so they never interleave in a worker.
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._startup_error: str | None = "model still loading"
        self._last_error: str | None = None
        self._failed_version: str | None = None
        self._pinned: str | None = None
        self.last_reconcile: float | None = None

    # --- start ------------------------------------------------------------------------------

    def start(self, *, pinned: str | None) -> None:
        """Blocking, never raises: register the run directories in SQL, load the startup
        version (see `choose_startup_version`), record it as active and swap it in. Without a
        loadable version the worker starts unready and says why."""
        self._pinned = pinned
        with self._lock:
            registry_active = self._register_run_dirs()
            version = choose_startup_version(
                self.models_dir, pinned=pinned, registry_active=registry_active
            )
            if version is None:
                self._startup_error = f"no run directory under MODELS_DIR={self.models_dir}"
                logger.warning("starting without a model: %s", self._startup_error)
                return
            try:
                serving = self._load(version)
            except (ServingError, CheckpointError, OSError) as error:
                self._startup_error = f"loading {version!r} failed: {error}"
                logger.error("starting without a model: %s", self._startup_error)
                return
            self._startup_error = None
            # Recorded as active so the reconcile loop does not undo an ACTIVE_MODEL pin.
            self._record(serving, mark_active=registry_active != serving.version)
            self._swap(serving)

    # --- activate ---------------------------------------------------------------------------

    def activate(self, version: str) -> Activation:
        """Make `version` the active one everywhere: load and verify it here, record it in
        SQL, swap it in, announce it. Raises InvalidVersionError / UnknownVersionError /
        ModelRefusedError; on any of them the current model keeps serving."""
        with self._lock:
            current = self.holder.current
            previous = current.version if current is not None else None
            try:
                serving = self._load(version)
            except CheckpointError as error:
                if version != previous:
                    self._record_failure(version, message=str(error))
                raise ModelRefusedError(
                    f"version {version!r} refused, still serving {previous!r}: {error}"
                ) from error
            self._failed_version = None
            self._record(serving, mark_active=True)
            self._swap(serving)
            if self.broadcast is not None:
                self.broadcast.publish(serving.version)
        return Activation(version=serving.version, previous=previous, device=serving.device)

    def newest_version(self) -> str:
        """The newest run directory's name (UnknownVersionError when there is none)."""
        return newest_version(self.models_dir)

    # --- follow -----------------------------------------------------------------------------

    def follow(self, version: str) -> None:
        """Serve `version` when this worker serves another; never raises. A version that
        failed here is not retried until a different one is asked for."""
        with self._lock:
            current = self.holder.current
            if current is not None and current.version == version:
                return
            if version == self._failed_version:
                return
            try:
                serving = self._load(version)
            except (ServingError, CheckpointError, OSError) as error:
                self._failed_version = version
                logger.error("could not follow active version %s: %s", version, error)
                return
            self._failed_version = None
            self._swap(serving)

    def reconcile(self) -> None:
        """Follow the active version (repairs missed announcements); a worker serving nothing
        while no version is active activates the startup choice once it is on disk, so a model
        trained after start-up (compose: `up` before `train`) is served without a reload."""
        desired = self.desired_version()
        if desired is not None:
            self.follow(desired)
        elif self.holder.current is None:
            self._adopt_startup_choice()
        self.last_reconcile = time.time()
        self._write_status()

    def _adopt_startup_choice(self) -> None:
        version = choose_startup_version(self.models_dir, pinned=self._pinned, registry_active=None)
        if version is None or version == self._failed_version:
            return
        if version not in list_versions(self.models_dir):
            return  # a pinned ACTIVE_MODEL not written yet: wait for it, take nothing else
        try:
            self.activate(version)
        except (ServingError, OSError) as error:
            self._failed_version = version
            logger.error("could not load %s, found after start-up: %s", version, error)
            return
        logger.info("serving %s, found after start-up", version)

    def desired_version(self) -> str | None:
        """The active version: the SQL registry's, else the last announced one, else None."""
        if self.sessions is not None:
            try:
                return crud.active_version(self.sessions)
            except Exception as error:  # DB down: fall back to Redis
                logger.debug("registry unavailable for reconcile: %s", error)
        if self.broadcast is not None:
            return self.broadcast.announced_version()
        return None

    def run_background(self) -> None:
        """Start the reconcile loop and, with Redis, the announcement listener."""
        self._stop.clear()
        targets: list[tuple[str, Callable[[], None]]] = [("model-reconcile", self._reconcile_loop)]
        broadcast = self.broadcast
        if broadcast is not None:
            targets.append(("model-listener", lambda: broadcast.listen(self.follow, self._stop)))
        for name, target in targets:
            thread = threading.Thread(target=target, name=name, daemon=True)
            thread.start()
            self._threads.append(thread)
        self._write_status()

    def stop(self, timeout: float = 3.0) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)
        self._threads.clear()
        if self.broadcast is not None:
            self.broadcast.close()

    def _reconcile_loop(self) -> None:
        while not self._stop.wait(self.reconcile_seconds):
            self.reconcile()

    # --- reporting --------------------------------------------------------------------------

    def unavailable_reason(self) -> str:
        """Why no model is served (for 503s and /readyz)."""
        reason = self._last_error or self._startup_error
        return f"no model loaded: {reason}" if reason else "no model loaded"

    @property
    def last_error(self) -> str | None:
        """The last refused load's reason; None after a successful load."""
        return self._last_error

    def status(self) -> dict[str, Any]:
        current = self.holder.current
        return {
            "worker": self.worker,
            "pid": os.getpid(),
            "version": current.version if current is not None else None,
            "last_reconcile": self.last_reconcile,
            "updated_at": time.time(),
        }

    def workers(self) -> list[dict[str, Any]]:
        """Every live worker's status (only this one's without Redis)."""
        if self.broadcast is None:
            return [self.status()]
        return self.broadcast.workers(self.status())

    def overview(self) -> ModelsResponse:
        """Versions in the registry and on disk, which one this worker serves, every worker."""
        current = self.holder.current
        serving = current.version if current is not None else None
        on_disk = list_versions(self.models_dir)
        found: dict[str, VersionInfo] = {}
        registry = "disabled" if self.sessions is None else "ok"
        if self.sessions is not None:
            try:
                records = crud.registered_versions(self.sessions)
            except Exception as error:  # the registry is optional: list what is on disk
                records = []
                registry = f"unavailable: {first_line(error)}"
            for record in records:
                found[record.name] = VersionInfo(
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
                found[name] = VersionInfo(
                    name=name, status="unregistered", serving=name == serving, on_disk=True
                )
        return ModelsResponse(
            serving=serving,
            registry=registry,
            versions=list(found.values()),
            workers=self.workers(),
        )

    # --- the steps --------------------------------------------------------------------------

    def _load(self, version: str) -> ServingModel:
        """Resolve and load beside the current model; raises (nothing is swapped here)."""
        run_dir = resolve_version(self.models_dir, version)
        try:
            serving = ServingModel.load(run_dir, device=self.device)
        except CheckpointError as error:
            self._last_error = str(error)
            current = self.holder.current
            logger.error(
                "model load failed, keeping %s: %s",
                current.version if current is not None else None,
                error,
            )
            raise
        self._last_error = None
        return serving

    def _record(self, serving: ServingModel, *, mark_active: bool) -> None:
        """Best effort: `serving` as the registry's active version, its items as the catalog."""
        if self.sessions is None:
            return
        rows = [
            crud.CatalogRow(item_id=item, name=name, url=url, popularity=float(popularity))
            for item, name, url, popularity in zip(
                serving.items,
                serving.names,
                serving.urls,
                serving.popularity.tolist(),
                strict=True,
            )
        ]
        try:
            if mark_active:
                crud.mark_active(
                    self.sessions,
                    name=serving.version,
                    path=serving.run_dir,
                    manifest=serving.manifest,
                )
            crud.refresh_catalog(self.sessions, rows=rows)
        except Exception as error:  # the DB is optional for serving: log and go on
            logger.warning("could not record %s in the registry: %s", serving.version, error)

    def _record_failure(self, version: str, *, message: str) -> None:
        if self.sessions is None:
            return
        try:
            crud.mark_failed(
                self.sessions, name=version, path=self.models_dir / version, message=message
            )
        except Exception as error:
            logger.warning("could not record failed version %s: %s", version, error)

    def _register_run_dirs(self) -> str | None:
        """Register every run directory in SQL; returns the registry's active version (None
        without a database, or when it is down: logged, the service runs without it)."""
        if self.sessions is None:
            return None
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
            return crud.active_version(self.sessions)
        except Exception as error:
            logger.error(
                "model registry unavailable (%s); serving without it. Run `tanp-serve migrate` "
                "or set MIGRATE_ON_START=1 if the schema is missing",
                first_line(error),
            )
            return None

    def _swap(self, serving: ServingModel) -> None:
        self.holder.swap(serving)
        logger.info("serving model %s on %s", serving.version, serving.device)
        if self._on_swap is not None:
            try:
                self._on_swap(serving)
            except Exception:
                logger.exception("model-swapped callback raised")
        self._write_status()

    def _write_status(self) -> None:
        if self.broadcast is not None:
            self.broadcast.write_status(self.status())
