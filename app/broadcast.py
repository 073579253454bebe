"""Keeps every worker and replica on the active model version.

`ModelSync.activate` loads a version in this worker, records it as active in the registry and
announces it on the Redis channel `tanp:models`; every worker's subscriber thread loads an
announced version that differs from its own. A reconcile thread repairs missed messages: every
`reconcile_seconds` it reads the active version (SQL registry first, Redis key
`tanp:active_model` when SQL is unavailable) and loads it when it differs; a worker that serves
nothing while neither names a version activates ACTIVE_MODEL, else the newest run directory (the
startup rule), so a model trained after start-up is served without a reload. Each worker writes
its status into the Redis hash `tanp:workers` for /health. Without Redis only the reconcile runs.
Every failure here is logged and survived; none reaches a recommendation.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
from collections.abc import Callable
from typing import Any

import redis

from app.holder import ModelHolder, ServingModel, list_versions
from app.registry import SessionFactory, active_version, load_catalog, mark_active
from tanp.checkpoint import CheckpointError

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "tanp:"
REDIS_CONNECT_TIMEOUT_SECONDS = 1.0
REDIS_SOCKET_TIMEOUT_SECONDS = 2.0


def worker_id() -> str:
    """Unique per process across replicas: host name plus pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


class ModelSync:
    """One per worker process: activation, the Redis subscriber and the reconcile loop."""

    def __init__(
        self,
        *,
        holder: ModelHolder,
        session_factory: SessionFactory | None,
        redis_url: str | None,
        reconcile_seconds: float,
        key_prefix: str = DEFAULT_PREFIX,
        on_loaded: Callable[[ServingModel], None] | None = None,
        catalog_urls: dict[str, str] | None = None,
        pinned_version: str | None = None,
    ) -> None:
        self.holder = holder
        self.pinned_version = pinned_version
        self.session_factory = session_factory
        self.reconcile_seconds = reconcile_seconds
        self.worker = worker_id()
        self.channel = f"{key_prefix}models"
        self.active_key = f"{key_prefix}active_model"
        self.workers_key = f"{key_prefix}workers"
        self._on_loaded = on_loaded
        self._catalog_urls = catalog_urls
        self._redis = (
            redis.Redis.from_url(
                redis_url,
                socket_connect_timeout=REDIS_CONNECT_TIMEOUT_SECONDS,
                socket_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
                health_check_interval=30,
            )
            if redis_url
            else None
        )
        # Serialises activate / announced loads / reconcile so they never interleave in a worker.
        self._lock = threading.RLock()
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._failed_version: str | None = None
        self.last_reconcile: float | None = None

    # --- activation -------------------------------------------------------------------------

    def activate(self, version: str) -> ServingModel:
        """Load `version` here (raises VersionError / CheckpointError; old model keeps serving),
        record it as active and announce it to the other workers (both best effort)."""
        with self._lock:
            serving = self.holder.load(version)
            self._failed_version = None
            self._after_load(serving)
            if self.session_factory is not None:
                try:
                    mark_active(self.session_factory, serving)
                    load_catalog(self.session_factory, serving, urls=self._catalog_urls)
                except Exception as error:  # the DB is optional for serving: log and go on
                    logger.warning("could not record %s as active: %s", version, error)
            self.publish(version)
        return serving

    def publish(self, version: str) -> None:
        if self._redis is None:
            return
        message = json.dumps({"version": version, "origin": self.worker})
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.set(self.active_key, version)
            pipe.publish(self.channel, message)
            pipe.execute()
        except redis.RedisError as error:
            logger.warning(
                "could not announce %s on Redis (reconcile will catch up): %s", version, error
            )

    # --- background threads -----------------------------------------------------------------

    def start(self) -> None:
        self._stop.clear()
        targets: list[tuple[str, Callable[[], None]]] = [("model-reconcile", self._reconcile_loop)]
        if self._redis is not None:
            targets.append(("model-subscriber", self._subscribe_loop))
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
        if self._redis is not None:
            with contextlib.suppress(redis.RedisError):
                self._redis.hdel(self.workers_key, self.worker)
            self._redis.close()

    def _subscribe_loop(self) -> None:
        assert self._redis is not None
        backoff = 0.5
        while not self._stop.is_set():
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.channel)
                backoff = 0.5
                while not self._stop.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is not None and message.get("type") == "message":
                        self.handle_announcement(message.get("data"))
            except (redis.RedisError, OSError) as error:
                logger.warning("model channel subscription lost (retrying): %s", error)
                self._stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                with contextlib.suppress(redis.RedisError, OSError):
                    pubsub.close()

    def handle_announcement(self, data: object) -> None:
        try:
            payload = json.loads(data.decode() if isinstance(data, bytes) else str(data))
            version = str(payload["version"])
            origin = str(payload.get("origin", ""))
        except (ValueError, KeyError, TypeError) as error:
            logger.warning("ignoring malformed model announcement %r: %s", data, error)
            return
        if origin == self.worker:
            return
        logger.info("model %s announced by %s", version, origin)
        self._follow(version)

    def _reconcile_loop(self) -> None:
        while not self._stop.wait(self.reconcile_seconds):
            self.reconcile()

    def reconcile(self) -> None:
        """Load the registry's active version when this worker serves another one; serving
        nothing with no active version, activate the startup choice once it is on disk."""
        desired = self.desired_version()
        if desired is not None:
            self._follow(desired)
        elif self.holder.current is None:
            self._adopt_startup_choice()
        self.last_reconcile = time.time()
        self._write_status()

    def desired_version(self) -> str | None:
        """The active version: the SQL registry's, else the Redis key's, else None."""
        if self.session_factory is not None:
            try:
                return active_version(self.session_factory)
            except Exception as error:  # DB down: fall back to Redis
                logger.debug("registry unavailable for reconcile: %s", error)
        if self._redis is not None:
            try:
                value = self._redis.get(self.active_key)
            except redis.RedisError as error:
                logger.debug("redis unavailable for reconcile: %s", error)
                return None
            if isinstance(value, bytes):
                return value.decode()
        return None

    def _adopt_startup_choice(self) -> None:
        versions = list_versions(self.holder.models_dir)
        version = self.pinned_version or (versions[-1] if versions else None)
        if version is None or version not in versions or version == self._failed_version:
            return
        try:
            self.activate(version)
        except (CheckpointError, ValueError, OSError) as error:
            self._failed_version = version
            logger.error("could not load %s, found after start-up: %s", version, error)
            return
        logger.info("serving %s, found after start-up", version)

    def _follow(self, version: str) -> None:
        with self._lock:
            current = self.holder.current
            if current is not None and current.version == version:
                return
            if version == self._failed_version:
                return  # already failed here; wait for a different version to be announced
            try:
                serving = self.holder.load(version)
            except (CheckpointError, ValueError, OSError) as error:
                self._failed_version = version
                logger.error("could not follow active version %s: %s", version, error)
                return
            self._failed_version = None
            self._after_load(serving)

    def _after_load(self, serving: ServingModel) -> None:
        if self._on_loaded is not None:
            try:
                self._on_loaded(serving)
            except Exception:
                logger.exception("model-loaded callback raised")
        self._write_status()

    # --- per-worker status ------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        current = self.holder.current
        return {
            "worker": self.worker,
            "pid": os.getpid(),
            "version": current.version if current is not None else None,
            "last_reconcile": self.last_reconcile,
            "updated_at": time.time(),
        }

    def _status_ttl_seconds(self) -> int:
        return max(int(self.reconcile_seconds * 3) + 1, 5)

    def _write_status(self) -> None:
        if self._redis is None:
            return
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.hset(self.workers_key, self.worker, json.dumps(self.status()))
            pipe.expire(self.workers_key, self._status_ttl_seconds())
            pipe.execute()
        except redis.RedisError as error:
            logger.debug("could not write worker status: %s", error)

    def workers(self) -> list[dict[str, Any]]:
        """Status of every live worker (this one only, without Redis); stale entries skipped."""
        if self._redis is None:
            return [self.status()]
        try:
            raw = self._redis.hgetall(self.workers_key)
        except redis.RedisError:
            return [self.status()]
        fresh_after = time.time() - self._status_ttl_seconds()
        found: dict[str, dict[str, Any]] = {}
        for value in raw.values():
            try:
                entry = json.loads(value)
            except ValueError:
                continue
            if isinstance(entry, dict) and float(entry.get("updated_at", 0)) >= fresh_after:
                found[str(entry.get("worker"))] = entry
        found[self.worker] = self.status()
        return sorted(found.values(), key=lambda entry: str(entry["worker"]))
