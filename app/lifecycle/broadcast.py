"""The Redis side of keeping every worker and replica on the active model version: `publish` (the
key `tanp:active_model` and the channel `tanp:models`), `listen` (versions other workers
announced, handed to a callback), each worker's status in the hash `tanp:workers`. Every Redis
failure is logged and survived. Knows nothing about loading models or SQL.
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

logger = logging.getLogger(__name__)

REDIS_CONNECT_TIMEOUT_SECONDS = 1.0
REDIS_SOCKET_TIMEOUT_SECONDS = 2.0


def worker_id() -> str:
    """Unique per process across replicas: host name plus pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


class ModelBroadcast:
    """One per worker process: announcements out and in, and the shared worker-status hash."""

    def __init__(
        self,
        *,
        redis_url: str,
        worker: str,
        reconcile_seconds: float,
        key_prefix: str,
    ) -> None:
        self.worker = worker
        # A worker that missed about three reconcile rounds is gone.
        self.status_ttl_seconds = max(int(reconcile_seconds * 3) + 1, 5)
        self.channel = f"{key_prefix}models"
        self.active_key = f"{key_prefix}active_model"
        self.workers_key = f"{key_prefix}workers"
        self._redis = redis.Redis.from_url(
            redis_url,
            socket_connect_timeout=REDIS_CONNECT_TIMEOUT_SECONDS,
            socket_timeout=REDIS_SOCKET_TIMEOUT_SECONDS,
            health_check_interval=30,
        )

    def publish(self, version: str) -> None:
        """Best effort: a missed announcement is repaired by every worker's reconcile."""
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

    def announced_version(self) -> str | None:
        """The last announced version (the Redis key), None when unset or Redis is down."""
        try:
            value = self._redis.get(self.active_key)
        except redis.RedisError as error:
            logger.debug("redis unavailable for reconcile: %s", error)
            return None
        return value.decode() if isinstance(value, bytes) else None

    def listen(self, on_version: Callable[[str], None], stop: threading.Event) -> None:
        """Blocking (run it in a thread): hand each version announced by another worker to
        `on_version` until `stop` is set; resubscribes with back-off after Redis failures."""
        backoff = 0.5
        while not stop.is_set():
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.channel)
                backoff = 0.5
                while not stop.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is not None and message.get("type") == "message":
                        version = self.announced_by_another(message.get("data"))
                        if version is not None:
                            on_version(version)
            except (redis.RedisError, OSError) as error:
                logger.warning("model channel subscription lost (retrying): %s", error)
                stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                with contextlib.suppress(redis.RedisError, OSError):
                    pubsub.close()

    def announced_by_another(self, data: object) -> str | None:
        """The version of a channel message from another worker; None for this worker's own
        messages and for malformed ones (logged)."""
        try:
            payload = json.loads(data.decode() if isinstance(data, bytes) else str(data))
            version = str(payload["version"])
            origin = str(payload.get("origin", ""))
        except (ValueError, KeyError, TypeError) as error:
            logger.warning("ignoring malformed model announcement %r: %s", data, error)
            return None
        if origin == self.worker:
            return None
        logger.info("model %s announced by %s", version, origin)
        return version

    def write_status(self, status: dict[str, Any]) -> None:
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.hset(self.workers_key, self.worker, json.dumps(status))
            pipe.expire(self.workers_key, self.status_ttl_seconds)
            pipe.execute()
        except redis.RedisError as error:
            logger.debug("could not write worker status: %s", error)

    def workers(self, own: dict[str, Any]) -> list[dict[str, Any]]:
        """Status of every live worker (`own` for this one); stale entries skipped."""
        try:
            raw = self._redis.hgetall(self.workers_key)
        except redis.RedisError:
            return [own]
        fresh_after = time.time() - self.status_ttl_seconds
        found: dict[str, dict[str, Any]] = {}
        for value in raw.values():
            try:
                entry = json.loads(value)
            except ValueError:
                continue
            if isinstance(entry, dict) and float(entry.get("updated_at", 0)) >= fresh_after:
                found[str(entry.get("worker"))] = entry
        found[self.worker] = own
        return sorted(found.values(), key=lambda entry: str(entry["worker"]))

    def close(self) -> None:
        with contextlib.suppress(redis.RedisError):
            self._redis.hdel(self.workers_key, self.worker)
        self._redis.close()
