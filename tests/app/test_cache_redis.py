"""The recommend route against the machine's real Redis (127.0.0.1:6379), then a dead one.

Isolation: every test's deployment prefix (BROADCAST_PREFIX) is unique, so every key this file
writes is `test-{unique}:state:...`; teardown deletes exactly those keys.
"""

from __future__ import annotations

import re
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
import redis
from app_helpers import AppFactory, TestClient

from tests.support.network import free_port

pytestmark = pytest.mark.integration

REDIS_URL = "redis://127.0.0.1:6379/0"
SUPPORT = [{"item_id": "a3", "rating": 1}, {"item_id": "a8", "rating": 0}]


@pytest.fixture(scope="module")
def live_redis() -> Iterator[redis.Redis]:
    client = redis.Redis.from_url(REDIS_URL, socket_timeout=1)
    try:
        client.ping()
    except redis.RedisError as error:
        pytest.skip(f"no Redis at {REDIS_URL}: {error}")
    yield client
    client.close()


@pytest.fixture
def prefix(live_redis: redis.Redis) -> Iterator[str]:
    """A deployment prefix of this test's own; its keys are deleted at teardown."""
    unique = f"test-{uuid.uuid4().hex[:12]}:"
    yield unique
    for key in live_redis.scan_iter(f"{unique}*"):
        live_redis.delete(key)


def state_keys(live_redis: redis.Redis, prefix: str) -> list[bytes]:
    return list(live_redis.scan_iter(f"{prefix}state:*"))


def cache_errors(client: TestClient) -> float:
    match = re.search(r"^tanp_cache_errors_total (\S+)$", client.get("/metrics").text, re.M)
    assert match is not None
    return float(match.group(1))


def test_second_identical_request_hits_redis(
    live_redis: redis.Redis, make_client: AppFactory, prefix: str
) -> None:
    client = make_client(redis_url=REDIS_URL, broadcast_prefix=prefix)
    assert client.get("/health").json()["redis"] == "ok"
    first = client.post("/v1/recommend", json={"support": SUPPORT, "k": 15}).json()
    keys = state_keys(live_redis, prefix)
    assert len(keys) == 1
    assert keys[0].decode().startswith(f"{prefix}state:{first['model_sha256']}:")
    ttl = live_redis.ttl(keys[0])
    assert isinstance(ttl, int)
    assert 0 < ttl <= 3600
    # A fresh app (think: another worker) reads the state the first one wrote.
    other = make_client(redis_url=REDIS_URL, broadcast_prefix=prefix)
    second = other.post("/v1/recommend", json={"support": SUPPORT[::-1], "k": 15}).json()
    assert first["cached"] is False
    assert second["cached"] is True
    assert second["items"] == first["items"]
    assert cache_errors(other) == 0


def test_deployments_sharing_one_redis_never_share_states(
    live_redis: redis.Redis, make_client: AppFactory, prefix: str
) -> None:
    """Issue 21 item 8: the task-state keys carry BROADCAST_PREFIX."""
    other_prefix = f"{prefix}other-"
    blue = make_client(redis_url=REDIS_URL, broadcast_prefix=prefix, answer_cache_bytes=0)
    green = make_client(redis_url=REDIS_URL, broadcast_prefix=other_prefix, answer_cache_bytes=0)
    assert blue.post("/v1/recommend", json={"support": SUPPORT}).json()["cached"] is False
    assert green.post("/v1/recommend", json={"support": SUPPORT}).json()["cached"] is False
    assert len(list(live_redis.scan_iter(f"{other_prefix}state:*"))) == 1


def test_a_planted_state_that_does_not_fit_is_ignored_and_replaced(
    live_redis: redis.Redis, make_client: AppFactory, prefix: str
) -> None:
    """Issue 21 item 1: a state under the model's key whose support indices fall outside the
    catalog (or whose widths differ) is recomputed, never served."""
    from tanp.scoring import pack_state, unpack_state

    client = make_client(redis_url=REDIS_URL, broadcast_prefix=prefix, answer_cache_bytes=0)
    honest = client.post("/v1/recommend", json={"support": SUPPORT, "k": 15}).json()
    (key,) = state_keys(live_redis, prefix)
    state = unpack_state(live_redis.get(key))  # type: ignore[arg-type]
    planted = state._replace(support_items=state.support_items + 1_000)
    live_redis.set(key, pack_state(planted))
    again = client.post("/v1/recommend", json={"support": SUPPORT, "k": 15}).json()
    assert again["cached"] is False and again["items"] == honest["items"]
    assert client.post("/v1/recommend", json={"support": SUPPORT, "k": 15}).json()["cached"]


def assert_serves_without_cache(client: TestClient) -> None:
    """(With the in-process answer memo off: it would answer the repeat without Redis.)"""
    before = cache_errors(client)
    bodies: list[dict[str, Any]] = [
        {"support": SUPPORT},
        {"support": SUPPORT},
        {"support": [{"item_id": "a1", "rating": 1}], "k": 3},
    ]
    for body in bodies:
        response = client.post("/v1/recommend", json=body)
        assert response.status_code == 200
        assert response.json()["cached"] is False
    assert cache_errors(client) > before
    assert client.get("/health").json()["redis"] == "down"


def test_unreachable_redis_still_serves(make_client: AppFactory) -> None:
    client = make_client(redis_url=f"redis://127.0.0.1:{free_port()}/0", answer_cache_bytes=0)
    assert_serves_without_cache(client)


def test_redis_that_never_answers_still_serves(make_client: AppFactory) -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(16)
        port = server.getsockname()[1]
        client = make_client(
            redis_url=f"redis://127.0.0.1:{port}/0",
            redis_timeout_seconds=0.05,
            answer_cache_bytes=0,
        )
        assert_serves_without_cache(client)


def test_many_keys_in_one_round_trip(live_redis: redis.Redis) -> None:
    from app.serving.cache import RedisCache

    prefix = f"test-many-{uuid.uuid4().hex[:12]}"
    cache = RedisCache(url=REDIS_URL, ttl_seconds=30, timeout_seconds=1.0)
    try:
        cache.set_many({f"{prefix}:a": b"1", f"{prefix}:b": b"2"})
        assert cache.get_many([f"{prefix}:b", f"{prefix}:none", f"{prefix}:a"]) == [
            b"2",
            None,
            b"1",
        ]
        assert 0 < live_redis.ttl(f"{prefix}:a") <= 30
    finally:
        live_redis.delete(f"{prefix}:a", f"{prefix}:b")
        cache.close()
