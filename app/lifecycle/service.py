"""`ModelService`: which model this worker serves. Start, activate (admin reload), follow (other
workers' announcements) and the reconcile loop, each through the same steps: resolve, load
beside and verify, record in SQL, swap, announce. The protocol (start order, what the registry's
record means, faults): docs/lifecycle.md.
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

from app.errors import ModelFaultError, ModelRefusedError, ServingError
from app.lifecycle.broadcast import ModelBroadcast
from app.lifecycle.registry import Registry, RegistryView, VersionOverview
from app.lifecycle.versions import list_versions, newest_version, resolve_version
from app.serving.model import ModelHolder, ServingModel
from app.storage.db import SessionFactory
from tanp.checkpoint import CheckpointError, read_manifest

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Activation:
    version: str
    previous: str | None
    device: str
    sha256: str = ""  # the activated weights
    # live workers that did not report these weights within RELOAD_CONFIRM_SECONDS (empty
    # when every one did, or when the answer does not wait for them)
    unconfirmed_workers: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class ModelsOverview:
    """Versions in the registry and on disk, the one this worker serves, every worker."""

    serving: str | None
    registry: str  # "ok", "disabled", or why the SQL registry could not be read
    versions: list[VersionOverview]
    workers: list[dict[str, Any]]


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
        registry_timeout_seconds: float,
        on_swap: Callable[[ServingModel], None] | None = None,
        confirm_seconds: float = 0.0,
    ) -> None:
        self.holder = holder
        self.models_dir = models_dir
        self.device = device
        self.registry = Registry(
            sessions, models_dir=models_dir, timeout_seconds=registry_timeout_seconds
        )
        self.broadcast = broadcast
        self.worker = worker
        self.reconcile_seconds = reconcile_seconds
        self.confirm_seconds = confirm_seconds  # RELOAD_CONFIRM_SECONDS
        self._on_swap = on_swap
        # Serialises start / activate / follow so they never interleave in a worker.
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._startup_error: str | None = "model still loading"
        self._last_error: str | None = None
        # the (version, weights sha256) `follow` last failed to load
        self._failed_version: tuple[str, str | None] | None = None
        self._refused_at_start: set[str] = set()  # versions `start` and its retries refused
        self._pinned: str | None = None
        # ACTIVE_MODEL served while SQL was down: recorded as active once SQL answers, unless
        # an activation recorded after this start supersedes it
        self._unrecorded_pin: tuple[str, datetime] | None = None
        self.last_reconcile: float | None = None
        self._swaps = 0  # models swapped in so far: a registry read older than a swap is stale

    # --- start ------------------------------------------------------------------------------

    def start(self, *, pinned: str | None) -> None:
        """Blocking, never raises: register the run directories in SQL, then serve the first
        version that verifies (see `startup_candidates`) and record it as active. Without a
        loadable version the worker starts unready and says why."""
        self._pinned = pinned
        with self._lock:
            registry = self.registry.register_run_dirs()
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
            except Exception as error:  # one bad version never stops the start
                refusals.append(f"loading {version!r} failed: {_reason(error)}")
                self._refused_at_start.add(version)
                if not isinstance(error, ServingError | OSError):
                    self.registry.record_failure(version, message=_reason(error))
                continue
            self._startup_error = None
            if refusals:
                logger.warning("serving %s after refusing: %s", version, "; ".join(refusals))
            self._record_start(serving, registry=registry)
            self._swap(serving)
            return True
        self._startup_error = "; ".join(refusals)
        logger.error("no model served %s: %s", when, self._startup_error)
        return False

    def _record_start(self, serving: ServingModel, *, registry: RegistryView) -> None:
        """Best effort: the version served at start as the registry's active one (a start
        cannot answer 503); a pinned one SQL cannot record now is recorded by the reconcile
        once SQL answers."""
        version = serving.version
        if version in registry.failed:
            # the last resort: better a model that failed some requests than none; its
            # failed mark stays until an operator activates it or another version
            logger.warning("serving %s although it is marked failed", version)
            return
        recorded = registry.reachable and (
            registry.active == version or self.registry.record_start(serving)
        )
        if not recorded and version == self._pinned:
            self._unrecorded_pin = (version, datetime.now(UTC))

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
            except ServingError:
                raise  # not a version name, or no such version: nothing to mark
            except Exception as error:  # whatever the folder holds, a refusal (422)
                if version != previous or (
                    current is not None and _weights_changed(current, self.models_dir)
                ):
                    self.registry.record_failure(version, message=_reason(error))
                raise ModelRefusedError(
                    f"version {version!r} refused, still serving {previous!r}: {_reason(error)}"
                ) from error
            self.registry.record_active(serving, previous=previous)
            self._failed_version = None
            self._unrecorded_pin = None
            self._swap(serving)
            if self.broadcast is not None:
                self.broadcast.publish(serving.version, sha256=serving.weights_sha256)
        return Activation(
            version=serving.version,
            previous=previous,
            device=serving.device,
            sha256=serving.weights_sha256,
            unconfirmed_workers=self._await_workers(serving.weights_sha256),
        )

    def _await_workers(self, sha256: str) -> list[str]:
        """With Redis and RELOAD_CONFIRM_SECONDS > 0: wait (outside the lifecycle lock) until
        every live worker reports `sha256`; the workers that did not within the time."""
        broadcast = self.broadcast
        if broadcast is None or self.confirm_seconds <= 0:
            return []
        deadline = time.monotonic() + self.confirm_seconds
        while True:
            behind = [
                str(entry.get("worker"))
                for entry in broadcast.workers(self.status())
                if entry.get("sha256") != sha256
            ]
            if not behind or time.monotonic() >= deadline:
                if behind:
                    logger.warning("workers not on %s yet: %s", sha256[:12], ", ".join(behind))
                return behind
            time.sleep(0.02)

    def newest_version(self) -> str:
        """The newest run directory's name (UnknownVersionError when there is none)."""
        return newest_version(self.models_dir)

    # --- follow -----------------------------------------------------------------------------

    def follow(
        self, version: str, sha256: str | None = None, *, read_at_swap: int | None = None
    ) -> None:
        """Serve `version` with the weights `sha256` (any weights when None) when this worker
        serves other weights; never raises. Weights that failed here are not retried until
        others are asked for; weights on disk other than `sha256` are not served (the
        announcement or the registry will say which). `read_at_swap`: the swap count when
        `version` was read from the registry; if a swap happened since (an announcement
        overtook the read), the read is stale and nothing changes."""
        try:
            self._follow(version, sha256, read_at_swap=read_at_swap)
        except Exception:  # the caller is a background thread: it must survive anything
            logger.exception("following %s failed", version)

    def _follow(self, version: str, sha256: str | None, *, read_at_swap: int | None) -> None:
        with self._lock:
            if read_at_swap is not None and read_at_swap != self._swaps:
                return
            current = self.holder.current
            if (
                current is not None
                and current.version == version
                and sha256 in (None, current.weights_sha256)
            ):
                return
            if (version, sha256) == self._failed_version:
                return
            try:
                serving = self._load(version)
            except Exception as error:
                self._failed_version = (version, sha256)
                logger.error("could not follow active version %s: %s", version, _reason(error))
                return
            if sha256 is not None and serving.weights_sha256 != sha256:
                self._failed_version = (version, sha256)
                logger.error(
                    "not following %s: its folder holds weights %s, the active ones are %s",
                    version,
                    serving.weights_sha256[:12],
                    sha256[:12],
                )
                return
            self._failed_version = None
            self._swap(serving)

    # --- faults while serving ---------------------------------------------------------------

    def report_fault(self, fault: ModelFaultError) -> None:
        """A served version broke an invariant on a request: mark it failed in the registry
        (once, off the request's thread; a mark SQL refuses is retried by the reconcile). The
        version keeps answering the requests it can; a restart skips it (see `start`)."""
        self.registry.mark_fault(fault.version, reason=fault.detail)

    def reconcile(self) -> None:
        """Follow the registry's active version (repairs missed announcements); while SQL is
        unreachable change nothing (the registry is what the API acknowledged: a stale Redis
        key must not undo it). A worker serving nothing while no version is active serves the
        startup choice once one is on disk, so a model trained after start-up (compose: `up`
        before `train`) is served without a reload."""
        self.registry.flush_fault_marks()
        swaps = self._swaps
        registry = self.registry.view()
        if registry.reachable and self._unrecorded_pin is not None:
            self._record_unrecorded_pin(registry)
            registry = self.registry.view()
        desired = (registry.active, registry.active_sha256) if registry.reachable else None
        if desired is not None and desired[0] is None:
            desired = None
        if not self.registry.enabled and self.broadcast is not None:
            desired = self.broadcast.announced()  # no registry: Redis is the record
        if desired is not None and desired[0] is not None:
            self.follow(desired[0], desired[1], read_at_swap=swaps)
        elif self.holder.current is None and (registry.reachable or not self.registry.enabled):
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
            try:
                self.reconcile()
            except Exception:  # one bad round (a registry or disk surprise) never ends the loop
                logger.exception(
                    "model reconcile failed; retrying in %.1f s", self.reconcile_seconds
                )

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
            "sha256": current.weights_sha256 if current is not None else None,
            "last_reconcile": self.last_reconcile,
            "updated_at": time.time(),
        }

    def workers(self) -> list[dict[str, Any]]:
        """Every live worker's status (only this one's without Redis)."""
        if self.broadcast is None:
            return [self.status()]
        return self.broadcast.workers(self.status())

    def overview(self) -> ModelsOverview:
        """Versions in the registry and on disk, which one this worker serves, every worker."""
        current = self.holder.current
        serving = current.version if current is not None else None
        registry, versions = self.registry.overview(serving=serving)
        return ModelsOverview(
            serving=serving, registry=registry, versions=versions, workers=self.workers()
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

    def _record_unrecorded_pin(self, registry: RegistryView) -> None:
        if self._unrecorded_pin is None:
            return
        version, since = self._unrecorded_pin
        current = self.holder.current
        if (
            current is None
            or current.version != version
            or self.registry.record_pin(current, since=since, active=registry.active)
        ):
            self._unrecorded_pin = None

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


def _reason(error: BaseException) -> str:
    """A refusal's text: a CheckpointError's own message, else the type and message."""
    if isinstance(error, CheckpointError | ServingError):
        return str(error)
    return f"{type(error).__name__}: {str(error)[:300]}"


def _weights_changed(current: ServingModel, models_dir: Path) -> bool:
    """Whether the served version's folder now holds other weights than those served (a
    retrain into the same folder): a refusal then belongs to the new weights."""
    try:
        manifest = read_manifest(models_dir / current.version)
    except CheckpointError:
        return True
    return manifest.get("weights_sha256") != current.weights_sha256
