"""ModelBroadcast without a live Redis: which channel messages are another worker's
announcements, and a worker list that degrades to this worker when Redis is unreachable."""

from __future__ import annotations

import json

import pytest

from app.lifecycle.broadcast import ModelBroadcast
from tests.support.network import free_port


@pytest.fixture
def broadcast() -> ModelBroadcast:
    return ModelBroadcast(
        redis_url=f"redis://127.0.0.1:{free_port()}/0",  # nothing listens there
        worker="here:1",
        reconcile_seconds=5,
        key_prefix="tanp-test:",
    )


def test_only_other_workers_announcements_are_followed(broadcast: ModelBroadcast) -> None:
    own = json.dumps({"version": "v2", "origin": "here:1"}).encode()
    assert broadcast.announced_by_another(own) is None
    assert broadcast.announced_by_another(b"not json") is None
    assert broadcast.announced_by_another(json.dumps({"origin": "elsewhere"})) is None
    other = json.dumps({"version": "v2", "origin": "there:7"}).encode()
    assert broadcast.announced_by_another(other) == ("v2", None)
    with_weights = json.dumps({"version": "v2", "sha256": "ab", "origin": "there:7"}).encode()
    assert broadcast.announced_by_another(with_weights) == ("v2", "ab")


def test_without_redis_the_worker_list_is_this_worker_and_nothing_raises(
    broadcast: ModelBroadcast,
) -> None:
    own = {"worker": "here:1", "pid": 1, "version": "v1", "updated_at": 0.0}
    assert broadcast.workers(own) == [own]
    assert broadcast.announced_version() is None
    broadcast.publish("v1")
    broadcast.write_status(own)
    broadcast.close()
