"""Task-embedding cache (SPEC section 7, issue 21): key `{prefix}state:{weights sha256}:{support
digest}` (the prefix is BROADCAST_PREFIX), value `tanp.scoring.pack_state`'s bytes (never pickle),
over Redis (`RedisCache`) or an in-process LRU with a TTL (`MemoryCache`). A store failure, a
malformed value or a state that does not fit the model is a miss, counted and logged, never an
error response or a served state. Knows nothing about HTTP or the model beyond its weights' sha.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable
from typing import Protocol

import redis
import torch
from redis.exceptions import RedisError

from tanp.model import TaskState
from tanp.scoring import StateShape, pack_state, unpack_state

logger = logging.getLogger(__name__)

DEFAULT_PREFIX = "tanp:"


def canonical_support(pairs: Iterable[tuple[str, float]]) -> str:
    """Sorted (item_id, rating) pairs as compact JSON; ratings as floats so 1 and 1.0 agree."""
    ordered = sorted((item_id, float(rating)) for item_id, rating in pairs)
    return json.dumps(ordered, separators=(",", ":"), ensure_ascii=True)


def support_digest(pairs: Iterable[tuple[str, float]]) -> str:
    """sha256 hex of the canonical support set: the cache key's tail and the sampling seed."""
    return hashlib.sha256(canonical_support(pairs).encode("ascii")).hexdigest()


def cache_key(*, weights_sha256: str, digest: str, prefix: str = DEFAULT_PREFIX) -> str:
    """`{prefix}state:{weights_sha256}:{digest}`: keyed by the weights, not the version's name,
    so new weights under an old name (a retrain into the same run directory) never read a
    state of the old ones."""
    return f"{prefix}state:{weights_sha256}:{digest}"


class ByteStore(Protocol):
    """A key -> bytes store with a TTL: what `TaskStateCache` keeps its states in."""

    kind: str

    def get_many(self, keys: list[str]) -> list[bytes | None]: ...

    def set_many(self, values: dict[str, bytes]) -> None: ...

    def status(self) -> str:
        """ "ok", "down" or "disabled" (no external backend), for /health."""
        ...

    def close(self) -> None: ...


class MemoryCache:
    """In-process LRU with a TTL; what a single process uses when REDIS_URL is unset."""

    kind = "memory"

    def __init__(
        self,
        *,
        ttl_seconds: float,
        max_entries: int = 10_000,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        now = self._clock()
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            expires_at, value = entry
            if expires_at <= now:
                del self._entries[key]
                return None
            self._entries.move_to_end(key)
            return value

    def set(self, key: str, value: bytes) -> None:
        expires_at = self._clock() + self.ttl_seconds
        with self._lock:
            self._entries[key] = (expires_at, value)
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        return [self.get(key) for key in keys]

    def set_many(self, values: dict[str, bytes]) -> None:
        for key, value in values.items():
            self.set(key, value)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)

    def status(self) -> str:
        return "disabled"

    def close(self) -> None:
        with self._lock:
            self._entries.clear()


class RedisCache:
    """Redis with short socket timeouts; any failure is a miss, counted through `on_error`.

    After a failure Redis is skipped for `backoff_seconds`, so a hung server costs one timeout
    per back-off window instead of one (or two) per request.
    """

    kind = "redis"

    def __init__(
        self,
        *,
        url: str,
        ttl_seconds: int,
        timeout_seconds: float,
        on_error: Callable[[], None] = lambda: None,
        backoff_seconds: float = 1.0,
        log_every_seconds: float = 30.0,
    ) -> None:
        self.ttl_seconds = ttl_seconds
        self.backoff_seconds = backoff_seconds
        self.log_every_seconds = log_every_seconds
        self._on_error = on_error
        self._client = redis.Redis.from_url(
            url,
            socket_timeout=timeout_seconds,
            socket_connect_timeout=timeout_seconds,
            retry_on_timeout=False,
        )
        self._skip_until = 0.0
        self._last_logged = float("-inf")
        self._lock = threading.Lock()

    def get(self, key: str) -> bytes | None:
        if self._backing_off():
            return None
        try:
            value = self._client.get(key)
        except (RedisError, OSError) as error:
            self._failed("get", error)
            return None
        return value if isinstance(value, bytes) else None

    def set(self, key: str, value: bytes) -> None:
        if self._backing_off():
            return
        try:
            self._client.set(key, value, ex=self.ttl_seconds)
        except (RedisError, OSError) as error:
            self._failed("set", error)

    def get_many(self, keys: list[str]) -> list[bytes | None]:
        """One MGET; a failure is a miss for every key."""
        if len(keys) == 1:
            return [self.get(keys[0])]
        if self._backing_off():
            return [None] * len(keys)
        try:
            values = self._client.mget(keys)
        except (RedisError, OSError) as error:
            self._failed("mget", error)
            return [None] * len(keys)
        return [value if isinstance(value, bytes) else None for value in values]

    def set_many(self, values: dict[str, bytes]) -> None:
        """One pipeline of SETs with the TTL (not a transaction)."""
        if len(values) == 1:
            ((key, value),) = values.items()
            self.set(key, value)
            return
        if self._backing_off() or not values:
            return
        try:
            pipeline = self._client.pipeline(transaction=False)
            for key, value in values.items():
                pipeline.set(key, value, ex=self.ttl_seconds)
            pipeline.execute()
        except (RedisError, OSError) as error:
            self._failed("set", error)

    def status(self) -> str:
        try:
            return "ok" if self._client.ping() else "down"
        except (RedisError, OSError):
            return "down"

    def close(self) -> None:
        try:
            self._client.close()
        except (RedisError, OSError) as error:
            logger.debug("closing the redis client failed: %s", error)

    def _backing_off(self) -> bool:
        return time.monotonic() < self._skip_until

    def _failed(self, operation: str, error: Exception) -> None:
        self._on_error()
        now = time.monotonic()
        with self._lock:
            self._skip_until = now + self.backoff_seconds
            should_log = now - self._last_logged >= self.log_every_seconds
            if should_log:
                self._last_logged = now
        if should_log:
            logger.warning(
                "redis %s failed, serving without cache for %.1fs: %s: %s",
                operation,
                self.backoff_seconds,
                type(error).__name__,
                error,
            )


class TaskStateCache:
    """Task states by the weights' sha256 and support digest, over one byte store."""

    def __init__(self, store: ByteStore, *, prefix: str = DEFAULT_PREFIX) -> None:
        self.store = store
        self.prefix = prefix

    @property
    def kind(self) -> str:
        return self.store.kind

    def get_many(
        self,
        *,
        weights_sha256: str,
        digests: list[str],
        device: torch.device,
        shape: StateShape | None = None,
    ) -> list[TaskState | None]:
        """The cached states on `device`, None where absent, expired, malformed, not fitting
        the model's `shape`, or the store is down; one round trip to the store."""
        keys = [
            cache_key(weights_sha256=weights_sha256, digest=d, prefix=self.prefix) for d in digests
        ]
        states: list[TaskState | None] = []
        for key, payload in zip(keys, self.store.get_many(keys), strict=True):
            try:
                states.append(
                    None if payload is None else unpack_state(payload, device=device, shape=shape)
                )
            except ValueError as error:
                logger.warning("ignoring a cache entry that does not fit %s: %s", key, error)
                states.append(None)
        return states

    def put_many(self, *, weights_sha256: str, states: dict[str, TaskState]) -> None:
        """Store each digest -> state of `states`, in one round trip to the store."""
        self.store.set_many(
            {
                cache_key(weights_sha256=weights_sha256, digest=d, prefix=self.prefix): (
                    pack_state(s)
                )
                for d, s in states.items()
            }
        )

    def status(self) -> str:
        return self.store.status()

    def close(self) -> None:
        self.store.close()
