"""The model lifecycle of one worker: start, activate (admin reload), follow (other workers).

Every path goes through the same steps: resolve the version name under MODELS_DIR
(`app.lifecycle.versions`), load it beside the current model and verify it (sha256, shapes, values,
manifest probe), record it in SQL (active version, catalog), swap it in, announce it.

The SQL registry is the record of what the API acknowledged. `activate` answers only once SQL
holds the new active version: when the registry cannot record it (down, or no answer within
REGISTRY_TIMEOUT_SECONDS) it raises `RegistryUnavailableError` (503) and changes nothing, so no
acknowledged reload is ever undone by a worker that reads the registry later. `follow` (a
version another worker announced, or the registry's active version found by the reconcile loop)
only loads, verifies and swaps. While SQL is unreachable the reconcile changes nothing.
`start` takes ACTIVE_MODEL alone when it is set, else the first version that verifies among:
the registry's active one, the last announced one (Redis; only while SQL is down), then the run
directories newest first, versions marked failed last. A refused version leaves the old model
serving and is marked failed; a failed mark survives restarts.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from app.errors import (
    ModelFaultError,
    ModelRefusedError,
    RegistryUnavailableError,
    ServingError,
)
from app.lifecycle.broadcast import ModelBroadcast
from app.lifecycle.versions import list_versions, newest_version, resolve_version
from app.schemas import ModelsResponse, VersionInfo
from app.serving.model import ModelHolder, ServingModel
from app.storage import crud
from app.storage.db import SessionFactory, first_line
from tanp.checkpoint import CheckpointError, read_manifest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Activation:
    version: str
    previous: str | None
    device: str


@dataclass(frozen=True)
class RegistryView:
    """What the SQL registry says, or that it could not be read (`reachable` False)."""

    reachable: bool
    active: str | None = None
    failed: dict[str, str] = field(default_factory=dict)  # version -> why


def startup_candidates(
    models_dir: Path,
    *,
    pinned: str | None,
    registry: RegistryView,
    announced: str | None = None,
) -> list[str]:
    """Versions to try at start, in order: `pinned` (ACTIVE_MODEL) alone when set; else the
    registry's active version, the last announced one (only when the registry is unreachable),
    then every run directory newest first, those marked failed last."""
    if pinned:
        return [pinned]
    on_disk = list_versions(models_dir)[::-1]
    preferred = [registry.active] if registry.reachable else [announced]
    ordered = [version for version in preferred if version in on_disk]
    ordered += [version for version in on_disk if version not in registry.failed]
    ordered += [version for version in on_disk if version in registry.failed]
    return list(dict.fromkeys(ordered))


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
        registry_timeout_seconds: float = 10.0,
        on_swap: Callable[[ServingModel], None] | None = None,
    ) -> None:
        self.holder = holder
        self.models_dir = models_dir
        self.device = device
        self.sessions = sessions
        self.broadcast = broadcast
        self.worker = worker
        self.reconcile_seconds = reconcile_seconds
        self.registry_timeout_seconds = registry_timeout_seconds
        self._on_swap = on_swap
        # Serialises start / activate / follow so they never interleave in a worker.
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._startup_error: str | None = "model still loading"
        self._last_error: str | None = None
        self._failed_version: str | None = None  # the version `follow` last failed to load
        self._refused_at_start: set[str] = set()  # versions `start` and its retries refused
        self._pinned: str | None = None
        # ACTIVE_MODEL served while SQL was down: recorded as active once SQL answers, unless
        # an activation recorded after this start supersedes it
        self._unrecorded_pin: tuple[str, datetime] | None = None
        # versions that broke an invariant while serving -> the reason, until SQL records it
        self._fault_lock = threading.Lock()
        self._faulted: set[str] = set()
        self._pending_fault_marks: dict[str, str] = {}
        self.last_reconcile: float | None = None
        self._swaps = 0  # models swapped in so far: a registry read older than a swap is stale

    # --- start ------------------------------------------------------------------------------

    def start(self, *, pinned: str | None) -> None:
        """Blocking, never raises: register the run directories in SQL, then serve the first
        version that verifies (see `startup_candidates`) and record it as active. Without a
        loadable version the worker starts unready and says why."""
        self._pinned = pinned
        with self._lock:
            registry = self._register_run_dirs()
            announced = None
            if not registry.reachable and self.broadcast is not None:
                announced = self.broadcast.announced_version()
            self._serve_first_loadable(
                startup_candidates(
                    self.models_dir, pinned=pinned, registry=registry, announced=announced
                ),
                registry=registry,
                when="at start-up",
            )

    def _serve_first_loadable(
        self, candidates: list[str], *, registry: RegistryView, when: str
    ) -> bool:
        """Load the first of `candidates` that verifies, record it as active (best effort: a
        start cannot answer 503) and swap it in; every refusal is marked failed. False when
        none loads (the reason is kept for /readyz)."""
        if not candidates:
            self._startup_error = f"no run directory under MODELS_DIR={self.models_dir}"
            logger.warning("no model served %s: %s", when, self._startup_error)
            return False
        refusals: list[str] = []
        for version in candidates:
            try:
                serving = self._load(version)
            except (ServingError, CheckpointError, OSError) as error:
                refusals.append(f"loading {version!r} failed: {error}")
                self._refused_at_start.add(version)
                if isinstance(error, CheckpointError):
                    self._record_failure(version, message=str(error))
                continue
            self._startup_error = None
            if refusals:
                logger.warning("serving %s after refusing: %s", version, "; ".join(refusals))
            if version in registry.failed:
                # the last resort: better a model that failed some requests than none; its
                # failed mark stays until an operator activates it or another version
                logger.warning("serving %s although it is marked failed", version)
            elif not registry.reachable:
                if version == self._pinned:
                    self._unrecorded_pin = (version, datetime.now(UTC))
            elif registry.active != version:
                self._record_start(serving, pinned=version == self._pinned)
            self._swap(serving)
            return True
        self._startup_error = "; ".join(refusals)
        logger.error("no model served %s: %s", when, self._startup_error)
        return False

    # --- activate ---------------------------------------------------------------------------

    def activate(self, version: str) -> Activation:
        """Make `version` the active one everywhere: load and verify it here, record it in
        SQL, swap it in, announce it. Raises InvalidVersionError / UnknownVersionError /
        ModelRefusedError / RegistryUnavailableError; on any of them nothing changed and the
        current model keeps serving."""
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
            self._record_active(serving, previous=previous)
            self._failed_version = None
            self._unrecorded_pin = None
            self._swap(serving)
            if self.broadcast is not None:
                self.broadcast.publish(serving.version)
        return Activation(version=serving.version, previous=previous, device=serving.device)

    def newest_version(self) -> str:
        """The newest run directory's name (UnknownVersionError when there is none)."""
        return newest_version(self.models_dir)

    # --- follow -----------------------------------------------------------------------------

    def follow(self, version: str, *, read_at_swap: int | None = None) -> None:
        """Serve `version` when this worker serves another; never raises. A version that
        failed here is not retried until a different one is asked for. `read_at_swap`: the
        swap count when `version` was read from the registry; if a swap happened since (an
        announcement overtook the read), the read is stale and nothing changes."""
        with self._lock:
            if read_at_swap is not None and read_at_swap != self._swaps:
                return
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

    # --- faults while serving ---------------------------------------------------------------

    def report_fault(self, fault: ModelFaultError) -> None:
        """A served version broke an invariant on a request: mark it failed in the registry,
        once per version, off the request's thread (a mark the database refuses is retried by
        the reconcile loop). The version keeps answering the requests it can; a restart skips
        it (see `start`)."""
        with self._fault_lock:
            if fault.version in self._faulted:
                return
            self._faulted.add(fault.version)
            self._pending_fault_marks[fault.version] = fault.detail
        threading.Thread(target=self.flush_fault_marks, name="model-fault", daemon=True).start()

    def flush_fault_marks(self) -> None:
        """Write the pending failed marks to the registry; those it refuses stay pending."""
        with self._fault_lock:
            pending = dict(self._pending_fault_marks)
        for version, message in pending.items():
            if self._record_failure(version, message=message):
                with self._fault_lock:
                    self._pending_fault_marks.pop(version, None)

    def reconcile(self) -> None:
        """Follow the registry's active version (repairs missed announcements); while SQL is
        unreachable change nothing (the registry is what the API acknowledged: a stale Redis
        key must not undo it). A worker serving nothing while no version is active serves the
        startup choice once one is on disk, so a model trained after start-up (compose: `up`
        before `train`) is served without a reload."""
        self.flush_fault_marks()
        swaps = self._swaps
        registry = self.registry_view()
        if registry.reachable and self._unrecorded_pin is not None:
            self._record_unrecorded_pin(registry)
            registry = self.registry_view()
        desired = registry.active if registry.reachable else None
        if self.sessions is None and self.broadcast is not None:
            desired = self.broadcast.announced_version()  # no registry: Redis is the record
        if desired is not None:
            self.follow(desired, read_at_swap=swaps)
        elif self.holder.current is None and (registry.reachable or self.sessions is None):
            self._adopt_startup_choice(registry)
        self.last_reconcile = time.time()
        self._write_status()

    def _adopt_startup_choice(self, registry: RegistryView) -> None:
        candidates = startup_candidates(self.models_dir, pinned=self._pinned, registry=registry)
        # a version refused here is not loaded again every round (until a restart)
        candidates = [version for version in candidates if version not in self._refused_at_start]
        if self._pinned and self._pinned not in list_versions(self.models_dir):
            return  # a pinned ACTIVE_MODEL not written yet: wait for it, take nothing else
        if not candidates:
            return
        with self._lock:
            if self.holder.current is not None:
                return
            if self._serve_first_loadable(
                candidates, registry=registry, when="with versions found after start-up"
            ):
                logger.info("serving a version found after start-up")

    def registry_view(self) -> RegistryView:
        """The registry's active and failed versions; `reachable` False when SQL is down or
        not configured."""
        if self.sessions is None:
            return RegistryView(reachable=False)
        try:
            return RegistryView(
                reachable=True,
                active=crud.active_version(self.sessions),
                failed=crud.failed_versions(self.sessions),
            )
        except Exception as error:  # DB down: the caller changes nothing
            logger.debug("registry unavailable for reconcile: %s", first_line(error))
            return RegistryView(reachable=False)

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

    def _record_active(self, serving: ServingModel, *, previous: str | None) -> None:
        """`serving` as the registry's active version, confirmed by SQL within
        REGISTRY_TIMEOUT_SECONDS, else RegistryUnavailableError; then the catalog (best
        effort: the service reads its catalog from the model, never from SQL)."""
        sessions = self.sessions
        if sessions is None:
            return
        try:
            call_with_deadline(
                lambda: crud.mark_active(
                    sessions, name=serving.version, path=serving.run_dir, manifest=serving.manifest
                ),
                seconds=self.registry_timeout_seconds,
            )
        except Exception as error:
            raise RegistryUnavailableError(
                f"version {serving.version!r} verified but not activated: the model registry "
                f"could not record it ({first_line(error)}); still serving {previous!r}. "
                "Nothing was changed; retry when the database is back."
            ) from error
        self._refresh_catalog(serving)

    def _record_start(self, serving: ServingModel, *, pinned: bool) -> None:
        """Best effort at start: `serving` as the active version; a pinned version that SQL
        cannot record now is recorded by the reconcile once SQL answers."""
        if self.sessions is None:
            return
        try:
            crud.mark_active(
                self.sessions, name=serving.version, path=serving.run_dir, manifest=serving.manifest
            )
        except Exception as error:  # a start never fails for the registry's sake
            logger.warning("could not record %s in the registry: %s", serving.version, error)
            if pinned:
                self._unrecorded_pin = (serving.version, datetime.now(UTC))
            return
        self._refresh_catalog(serving)

    def _record_unrecorded_pin(self, registry: RegistryView) -> None:
        if self._unrecorded_pin is None or self.sessions is None:
            return
        version, started = self._unrecorded_pin
        current = self.holder.current
        if current is None or current.version != version:
            self._unrecorded_pin = None
            return
        try:
            if registry.active != version and not crud.activated_since(self.sessions, started):
                crud.mark_active(
                    self.sessions, name=version, path=current.run_dir, manifest=current.manifest
                )
        except Exception as error:
            logger.debug("pinned version %s still not recorded: %s", version, first_line(error))
            return
        self._unrecorded_pin = None
        self._refresh_catalog(current)

    def _refresh_catalog(self, serving: ServingModel) -> None:
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
            crud.refresh_catalog(self.sessions, rows=rows)
        except Exception as error:  # the DB is optional for serving: log and go on
            logger.warning("could not store the catalog of %s: %s", serving.version, error)

    def _record_failure(self, version: str, *, message: str) -> bool:
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

    def _register_run_dirs(self) -> RegistryView:
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
            logger.error(
                "model registry unavailable (%s); serving without it. Run `tanp-serve migrate` "
                "or set MIGRATE_ON_START=1 if the schema is missing",
                first_line(error),
            )
            return RegistryView(reachable=False)
        return self.registry_view()

    def _swap(self, serving: ServingModel) -> None:
        self._swaps += 1
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
