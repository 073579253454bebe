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

    def publish(self, version: str, *, sha256: str | None = None) -> None:
        """Best effort: a missed announcement is repaired by every worker's reconcile. The
        weights' `sha256` travels with the name (a retrain may reuse a name)."""
        message = json.dumps({"version": version, "sha256": sha256, "origin": self.worker})
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.set(self.active_key, json.dumps({"version": version, "sha256": sha256}))
            pipe.publish(self.channel, message)
            pipe.execute()
        except redis.RedisError as error:
            logger.warning(
                "could not announce %s on Redis (reconcile will catch up): %s", version, error
            )

    def announced_version(self) -> str | None:
        """The last announced version (the Redis key), None when unset or Redis is down."""
        announced = self.announced()
        return None if announced is None else announced[0]

    def announced(self) -> tuple[str, str | None] | None:
        """The last announced version and weights sha256 (None for an announcement of older
        code, a bare name), None when unset or Redis is down."""
        try:
            value = self._redis.get(self.active_key)
        except redis.RedisError as error:
            logger.debug("redis unavailable for reconcile: %s", error)
            return None
        if not isinstance(value, bytes):
            return None
        text = value.decode("utf-8", "replace")
        try:
            payload = json.loads(text)
        except ValueError:
            return text, None
        if not isinstance(payload, dict) or not isinstance(payload.get("version"), str):
            return text, None
        sha256 = payload.get("sha256")
        return payload["version"], sha256 if isinstance(sha256, str) else None

    def listen(self, on_version: Callable[[str, str | None], None], stop: threading.Event) -> None:
        """Blocking (run it in a thread): hand each version announced by another worker to
        `on_version` (name, weights sha256) until `stop` is set; resubscribes with back-off
        after Redis failures; an exception of `on_version` is logged, never ends the loop."""
        backoff = 0.5
        while not stop.is_set():
            pubsub = self._redis.pubsub(ignore_subscribe_messages=True)
            try:
                pubsub.subscribe(self.channel)
                backoff = 0.5
                while not stop.is_set():
                    message = pubsub.get_message(timeout=0.5)
                    if message is not None and message.get("type") == "message":
                        announced = self.announced_by_another(message.get("data"))
                        if announced is not None:
                            _handle(on_version, *announced)
            except (redis.RedisError, OSError) as error:
                logger.warning("model channel subscription lost (retrying): %s", error)
                stop.wait(backoff)
                backoff = min(backoff * 2, 10.0)
            finally:
                with contextlib.suppress(redis.RedisError, OSError):
                    pubsub.close()

    def announced_by_another(self, data: object) -> tuple[str, str | None] | None:
        """The version and weights sha256 of a channel message from another worker; None for
        this worker's own messages and for malformed ones (logged)."""
        try:
            payload = json.loads(data.decode() if isinstance(data, bytes) else str(data))
            version = str(payload["version"])
            origin = str(payload.get("origin", ""))
            sha256 = payload.get("sha256")
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            logger.warning("ignoring malformed model announcement %r: %s", data, error)
            return None
        if origin == self.worker:
            return None
        logger.info("model %s (weights %s) announced by %s", version, sha256, origin)
        return version, sha256 if isinstance(sha256, str) else None

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
        with contextlib.suppress(redis.RedisError, OSError):
            self._redis.hdel(self.workers_key, self.worker)
        self._redis.close()


def _handle(
    on_version: Callable[[str, str | None], None], version: str, sha256: str | None
) -> None:
    try:
        on_version(version, sha256)
    except Exception:  # the listener must outlive any one announcement
        logger.exception("handling the announcement of %s failed", version)
