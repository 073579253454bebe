"""ModelSync without the network: activation records and reconciles through the SQL registry,
a missed announcement is repaired by the reconcile, broken versions are not retried forever."""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path

import pytest
from model_versions import migrated_sqlite, two_versions

from app.broadcast import ModelSync
from app.holder import ModelHolder, ServingModel
from app.registry import SessionFactory, active_version, mark_active


@pytest.fixture
def models(tmp_path: Path) -> Path:
    return two_versions(tmp_path / "models")


@pytest.fixture
def sessions(tmp_path: Path) -> SessionFactory:
    return migrated_sqlite(tmp_path / "sync.db")[1]


def make_sync(
    models: Path, sessions: SessionFactory | None, loaded: list[str], *, pinned: str | None = None
) -> ModelSync:
    def on_loaded(serving: ServingModel) -> None:
        loaded.append(serving.version)

    return ModelSync(
        holder=ModelHolder(models_dir=models, device="cpu"),
        session_factory=sessions,
        redis_url=None,
        reconcile_seconds=60,
        on_loaded=on_loaded,
        pinned_version=pinned,
    )


def test_activate_loads_records_and_reports(models: Path, sessions: SessionFactory) -> None:
    loaded: list[str] = []
    sync = make_sync(models, sessions, loaded)
    sync.activate("v1")
    assert active_version(sessions) == "v1"
    assert loaded == ["v1"]
    assert [(worker["pid"], worker["version"]) for worker in sync.workers()] == [
        (os.getpid(), "v1")
    ]


def test_reconcile_follows_the_registry_after_a_missed_announcement(
    models: Path, sessions: SessionFactory
) -> None:
    leader_loaded: list[str] = []
    follower_loaded: list[str] = []
    leader = make_sync(models, sessions, leader_loaded)
    follower = make_sync(models, sessions, follower_loaded)
    follower.holder.load("v1")
    leader.activate("v2")  # no Redis: the follower never hears about it

    assert follower.holder.current is not None and follower.holder.current.version == "v1"
    follower.reconcile()
    assert follower.holder.current.version == "v2"
    assert follower_loaded == ["v2"]
    assert follower.last_reconcile is not None
    follower.reconcile()  # already there: nothing reloaded
    assert follower_loaded == ["v2"]


def test_a_broken_active_version_is_tried_once_and_the_old_model_keeps_serving(
    models: Path, sessions: SessionFactory, caplog: pytest.LogCaptureFixture
) -> None:
    good = ModelHolder(models_dir=models, device="cpu").load("v2")
    broken = models / "v2" / "manifest.json"
    loaded: list[str] = []
    follower = make_sync(models, sessions, loaded)
    follower.holder.load("v1")
    mark_active(sessions, good)
    manifest = json.loads(broken.read_text())
    manifest["format_version"] = 99
    broken.write_text(json.dumps(manifest))

    with caplog.at_level(logging.ERROR, logger="app.broadcast"):
        follower.reconcile()
        follower.reconcile()
    failures = [r for r in caplog.records if r.name == "app.broadcast"]
    assert len(failures) == 1 and "could not follow active version v2" in failures[0].message
    assert follower.holder.current is not None and follower.holder.current.version == "v1"
    assert follower.holder.last_error is not None and "format_version" in follower.holder.last_error
    assert loaded == []


def test_announcements_from_itself_or_malformed_are_ignored(models: Path) -> None:
    loaded: list[str] = []
    sync = make_sync(models, None, loaded)
    sync.holder.load("v1")
    sync.handle_announcement(json.dumps({"version": "v2", "origin": sync.worker}).encode())
    sync.handle_announcement(b"not json")
    sync.handle_announcement(json.dumps({"origin": "elsewhere"}))
    assert loaded == [] and sync.holder.current is not None
    assert sync.holder.current.version == "v1"
    sync.handle_announcement(json.dumps({"version": "v2", "origin": "other-host:1"}).encode())
    assert loaded == ["v2"]


def test_without_a_database_or_redis_there_is_no_desired_version(tmp_path: Path) -> None:
    sync = make_sync(tmp_path / "no-models-yet", None, [])
    assert sync.desired_version() is None
    sync.reconcile()  # nothing to follow, nothing on disk, nothing raised
    assert sync.holder.current is None


def test_a_worker_serving_nothing_takes_a_model_trained_after_start_up(
    tmp_path: Path, sessions: SessionFactory
) -> None:
    """Compose: `up` before the first `train` run must not leave /readyz at 503 until a reload."""
    loaded: list[str] = []
    sync = make_sync(tmp_path / "models", sessions, loaded)
    sync.reconcile()
    assert sync.holder.current is None and active_version(sessions) is None
    two_versions(tmp_path / "models")  # the train service writes its run directories
    sync.reconcile()
    assert loaded == ["v2"] and active_version(sessions) == "v2"
    sync.reconcile()  # serving the active version: nothing reloaded
    assert loaded == ["v2"]


def test_a_pinned_version_is_waited_for_and_a_broken_one_tried_once(
    models: Path, caplog: pytest.LogCaptureFixture
) -> None:
    loaded: list[str] = []
    waiting = make_sync(models, None, loaded, pinned="v3")
    waiting.reconcile()
    assert waiting.holder.current is None  # ACTIVE_MODEL=v3 is not there: v2 is not taken instead
    (models / "v1" / "model.safetensors").write_bytes(b"not a checkpoint")
    broken = make_sync(models, None, loaded, pinned="v1")
    with caplog.at_level(logging.ERROR, logger="app.broadcast"):
        broken.reconcile()
        broken.reconcile()
    assert len([r for r in caplog.records if r.name == "app.broadcast"]) == 1
    assert broken.holder.current is None and loaded == []
