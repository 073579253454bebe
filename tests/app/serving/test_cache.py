"""Cache keys, the in-process LRU, and RedisCache's failure handling without a live Redis."""

from __future__ import annotations

import socket
import time

from app.serving.cache import MemoryCache, RedisCache, cache_key, canonical_support, support_digest
from tests.support.network import free_port


def test_canonical_support_ignores_order_and_int_float() -> None:
    first = [("b", 1), ("a", 0.0)]
    second = [("a", 0), ("b", 1.0)]
    assert canonical_support(first) == canonical_support(second) == '[["a",0.0],["b",1.0]]'
    assert support_digest(first) == support_digest(second)
    assert support_digest(first) != support_digest([("a", 1), ("b", 1)])


def test_cache_key_layout_names_the_weights_and_the_deployment_prefix() -> None:
    digest = support_digest([("a", 1)])
    assert cache_key(weights_sha256="ab12", digest=digest) == f"tanp:state:ab12:{digest}"
    assert cache_key(weights_sha256="ab12", digest=digest, prefix="blue:") == (
        f"blue:state:ab12:{digest}"
    )
    assert len(digest) == 64


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_memory_cache_ttl() -> None:
    clock = FakeClock()
    cache = MemoryCache(ttl_seconds=10, clock=clock)
    cache.set("k", b"v")
    clock.now += 9.9
    assert cache.get("k") == b"v"
    clock.now += 0.2
    assert cache.get("k") is None
    assert len(cache) == 0


def test_memory_cache_evicts_least_recently_used() -> None:
    cache = MemoryCache(ttl_seconds=60, max_entries=2)
    cache.set("a", b"1")
    cache.set("b", b"2")
    assert cache.get("a") == b"1"  # a is now the most recent
    cache.set("c", b"3")
    assert cache.get("b") is None
    assert cache.get("a") == b"1"
    assert cache.get("c") == b"3"
    assert cache.status() == "disabled"


def redis_at(errors: list[int], *, backoff_seconds: float, port: int | None = None) -> RedisCache:
    """A RedisCache on `port` (default: one nothing listens on) counting its errors in `errors`."""
    return RedisCache(
        url=f"redis://127.0.0.1:{port or free_port()}/0",
        ttl_seconds=60,
        timeout_seconds=0.05,
        on_error=lambda: errors.append(1),
        backoff_seconds=backoff_seconds,
    )


def test_unreachable_redis_is_a_counted_miss() -> None:
    errors: list[int] = []
    cache = redis_at(errors, backoff_seconds=0.0)
    cache.set("k", b"v")
    assert cache.get("k") is None
    assert len(errors) == 2
    assert cache.status() == "down"


def test_backoff_skips_redis_after_a_failure() -> None:
    errors: list[int] = []
    cache = redis_at(errors, backoff_seconds=60.0)
    assert cache.get("k") is None
    assert cache.get("k") is None
    cache.set("k", b"v")
    assert len(errors) == 1


def test_hung_redis_times_out_quickly() -> None:
    """A server that accepts and never answers costs one socket timeout, not a hang."""
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        port = server.getsockname()[1]
        errors: list[int] = []
        cache = redis_at(errors, port=port, backoff_seconds=0.0)
        started = time.perf_counter()
        assert cache.get("k") is None
        assert time.perf_counter() - started < 1.0
        assert errors == [1]
        cache.close()


def test_many_keys_at_once_on_memory_and_an_unreachable_redis() -> None:
    memory = MemoryCache(ttl_seconds=60)
    memory.set_many({"a": b"1", "b": b"2"})
    assert memory.get_many(["b", "zz", "a"]) == [b"2", None, b"1"]
    errors: list[int] = []
    down = redis_at(errors, backoff_seconds=0.0)
    down.set_many({"a": b"1", "b": b"2"})
    assert down.get_many(["a", "b"]) == [None, None]
    assert len(errors) == 2
