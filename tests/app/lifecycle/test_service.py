"""ModelService without the network: start, activate and follow through the SQL registry; a
missed announcement is repaired by the reconcile; refused versions leave the old model serving
and are not retried forever."""

from __future__ import annotations

import json
import logging
import os
import shutil
import threading
import time
from pathlib import Path
from typing import Any, cast

import pytest
from app_helpers import ITEMS, NAMES
from model_versions import URLS, migrated_sqlite, save_version, two_versions
from sqlalchemy.exc import OperationalError

from app.errors import (
    ModelFaultError,
    ModelRefusedError,
    RegistryUnavailableError,
    UnknownVersionError,
)
from app.lifecycle.registry import RegistryView
from app.lifecycle.service import ModelService, startup_candidates
from app.serving.model import ModelHolder, ServingModel
from app.storage.crud import (
    active_version,
    catalog_rows,
    mark_active,
    mark_failed,
    registered_versions,
)
from app.storage.db import SessionFactory
from tanp.checkpoint import read_manifest


@pytest.fixture
def models(tmp_path: Path) -> Path:
    return two_versions(tmp_path / "models")


@pytest.fixture
def sessions(tmp_path: Path) -> SessionFactory:
    return migrated_sqlite(tmp_path / "sync.db")[1]


def make_service(models: Path, sessions: SessionFactory | None, swapped: list[str]) -> ModelService:
    def on_swap(serving: ServingModel) -> None:
        swapped.append(serving.version)

    return ModelService(
        holder=ModelHolder(),
        models_dir=models,
        device="cpu",
        sessions=sessions,
        broadcast=None,
        worker="test-host:1",
        reconcile_seconds=60,
        registry_timeout_seconds=10,
        on_swap=on_swap,
    )


def serving_version(service: ModelService) -> str | None:
    current = service.holder.current
    return current.version if current is not None else None


def break_manifest(run_dir: Path) -> None:
    manifest = json.loads((run_dir / "manifest.json").read_text())
    manifest["format_version"] = 99
    (run_dir / "manifest.json").write_text(json.dumps(manifest))


def test_startup_candidates_put_the_pin_alone_then_the_registry_then_newest_first(
    models: Path,
) -> None:
    save_version(models, "v3", seed=3)  # the newest
    up = RegistryView(reachable=True, active="v1")
    assert startup_candidates(models, pinned=None, registry=up) == ["v1", "v3", "v2"]
    assert startup_candidates(models, pinned="v2", registry=up) == ["v2"]
    # a registry's active version that left the disk is skipped; failed versions come last
    gone = RegistryView(reachable=True, active="gone", failed={"v3": "non-finite scores"})
    assert startup_candidates(models, pinned=None, registry=gone) == ["v2", "v1", "v3"]
    # while SQL is down the last announced version comes first
    down = RegistryView(reachable=False)
    assert startup_candidates(models, pinned=None, registry=down, announced="v1") == [
        "v1",
        "v3",
        "v2",
    ]
    assert startup_candidates(models / "none", pinned=None, registry=up) == []


def test_start_registers_every_run_dir_serves_the_newest_and_fills_the_catalog(
    models: Path, sessions: SessionFactory
) -> None:
    save_version(models, "v3", seed=3)
    break_manifest(models / "v3")
    past = os.stat(models / "v1" / "manifest.json").st_mtime - 100
    os.utime(models / "v3" / "manifest.json", (past, past))  # the oldest: not the one served
    swapped: list[str] = []
    service = make_service(models, sessions, swapped)
    service.start(pinned=None)

    assert serving_version(service) == "v2" and swapped == ["v2"]
    records = {record.name: record for record in registered_versions(sessions)}
    assert {name: record.status for name, record in records.items()} == {
        "v1": "available",
        "v2": "active",
        "v3": "failed",
    }
    assert "format_version 99" in (records["v3"].message or "")
    catalog = {row.item_id: row for row in catalog_rows(sessions)}
    assert len(catalog) == len(ITEMS)
    # Names and URLs come from the checkpoint's manifest, never from dataset files.
    assert (catalog["a0"].name, catalog["a0"].url, catalog["a0"].popularity) == (
        NAMES[0],
        URLS[0],
        40.0,
    )
    assert catalog["a1"].url is None  # "" in the manifest: no page known
    assert service.unavailable_reason() == "no model loaded"


def test_start_serves_the_registry_active_version_after_a_restart(
    models: Path, sessions: SessionFactory
) -> None:
    make_service(models, sessions, []).activate("v1")
    restarted = make_service(models, sessions, [])
    restarted.start(pinned=None)
    assert serving_version(restarted) == "v1"


@pytest.mark.parametrize(
    ("pinned", "reason"),
    [
        (None, "no run directory under MODELS_DIR"),
        ("v9", "loading 'v9' failed: no run directory named 'v9' under MODELS_DIR"),
    ],
)
def test_start_without_a_loadable_version_stays_unready_and_says_why(
    tmp_path: Path, sessions: SessionFactory, pinned: str | None, reason: str
) -> None:
    service = make_service(tmp_path / "empty", sessions, [])
    service.start(pinned=pinned)
    assert service.holder.current is None
    assert service.unavailable_reason().startswith("no model loaded: ")
    assert reason in service.unavailable_reason()


def test_activate_loads_records_swaps_and_reports(models: Path, sessions: SessionFactory) -> None:
    swapped: list[str] = []
    service = make_service(models, sessions, swapped)
    service.start(pinned="v2")
    activation = service.activate("v1")

    assert (activation.version, activation.previous, activation.device) == ("v1", "v2", "cpu")
    assert serving_version(service) == "v1" and swapped == ["v2", "v1"]
    assert active_version(sessions) == "v1"
    assert [(worker["pid"], worker["version"]) for worker in service.workers()] == [
        (os.getpid(), "v1")
    ]
    with pytest.raises(UnknownVersionError):
        service.activate("v9")
    assert serving_version(service) == "v1"


def test_a_refused_version_leaves_the_old_model_serving(
    models: Path, sessions: SessionFactory
) -> None:
    service = make_service(models, sessions, [])
    service.start(pinned="v2")
    shutil.copytree(models / "v1", models / "bad")
    break_manifest(models / "bad")

    with pytest.raises(
        ModelRefusedError, match=r"'bad' refused, still serving 'v2': .*format_version"
    ):
        service.activate("bad")
    assert serving_version(service) == "v2"
    assert active_version(sessions) == "v2"
    assert {record.name: record.status for record in registered_versions(sessions)}["bad"] == (
        "failed"
    )
    assert service.last_error is not None and "format_version" in service.last_error


def test_reconcile_follows_the_registry_after_a_missed_announcement(
    models: Path, sessions: SessionFactory
) -> None:
    leader = make_service(models, sessions, [])
    follower_swapped: list[str] = []
    follower = make_service(models, sessions, follower_swapped)
    follower.follow("v1")
    leader.activate("v2")  # no Redis: the follower never hears about it

    assert serving_version(follower) == "v1"
    follower.reconcile()
    assert serving_version(follower) == "v2"
    assert follower_swapped == ["v1", "v2"]
    assert follower.last_reconcile is not None and follower.last_reconcile <= time.time()
    follower.reconcile()  # already there: nothing reloaded
    assert follower_swapped == ["v1", "v2"]


def test_a_broken_active_version_is_tried_once_and_the_old_model_keeps_serving(
    models: Path, sessions: SessionFactory, caplog: pytest.LogCaptureFixture
) -> None:
    swapped: list[str] = []
    follower = make_service(models, sessions, swapped)
    follower.follow("v1")
    mark_active(sessions, name="v2", path=models / "v2", manifest={})
    break_manifest(models / "v2")

    with caplog.at_level(logging.ERROR, logger="app.lifecycle.service"):
        follower.reconcile()
        follower.reconcile()
    failures = [r for r in caplog.records if "could not follow" in r.message]
    assert len(failures) == 1 and "could not follow active version v2" in failures[0].message
    assert serving_version(follower) == "v1" and swapped == ["v1"]
    assert follower.last_error is not None and "format_version" in follower.last_error


def test_without_a_database_or_redis_there_is_no_desired_version(tmp_path: Path) -> None:
    service = make_service(tmp_path / "no-models-yet", None, [])
    assert service.registry.view() == RegistryView(reachable=False)
    service.reconcile()  # nothing to follow, nothing on disk, nothing raised
    assert service.holder.current is None
    assert service.overview().registry == "disabled"


def test_a_worker_serving_nothing_takes_a_model_trained_after_start_up(
    tmp_path: Path, sessions: SessionFactory
) -> None:
    """Compose: `up` before the first `train` run must not leave /readyz at 503 until a reload."""
    swapped: list[str] = []
    service = make_service(tmp_path / "models", sessions, swapped)
    service.start(pinned=None)
    service.reconcile()
    assert service.holder.current is None and active_version(sessions) is None
    two_versions(tmp_path / "models")  # the train service writes its run directories
    service.reconcile()
    assert swapped == ["v2"] and active_version(sessions) == "v2"
    service.reconcile()  # serving the active version: nothing reloaded
    assert swapped == ["v2"]


def test_a_pinned_version_is_waited_for_and_a_broken_one_tried_once(
    models: Path, caplog: pytest.LogCaptureFixture
) -> None:
    swapped: list[str] = []
    waiting = make_service(models, None, swapped)
    waiting._pinned = "v3"
    waiting.reconcile()
    assert waiting.holder.current is None  # ACTIVE_MODEL=v3 is not there: v2 is not taken instead
    (models / "v1" / "model.safetensors").write_bytes(b"not a checkpoint")
    broken = make_service(models, None, swapped)
    broken._pinned = "v1"
    with caplog.at_level(logging.ERROR, logger="app.lifecycle.service"):
        broken.reconcile()
        broken.reconcile()
    assert len([r for r in caplog.records if "found after start-up" in r.message]) == 1
    assert broken.holder.current is None and swapped == []


class Outage:
    """Wraps a session factory so the database can be cut (connection refused) or hung."""

    def __init__(self, sessions: SessionFactory) -> None:
        self._sessions = sessions
        self.down = False
        self.hung = threading.Event()
        self.release = threading.Event()

    def _enter(self) -> None:
        if self.down:
            raise OperationalError("SELECT 1", {}, ConnectionRefusedError("connection refused"))
        if self.hung.is_set():
            self.release.wait(30)

    def __call__(self) -> Any:
        self._enter()
        return self._sessions()

    def begin(self) -> Any:
        self._enter()
        return self._sessions.begin()


class StaleAnnouncement:
    """The Redis side as a worker sees it when the key is stale (Redis missed a publish)."""

    def __init__(self, version: str) -> None:
        self.version = version

    def announced_version(self) -> str:
        return self.version

    def announced(self) -> tuple[str, str | None]:
        return self.version, None

    def publish(self, version: str, *, sha256: str | None = None) -> None:
        return None

    def write_status(self, status: dict[str, Any]) -> None:
        return None


def test_a_reload_the_registry_cannot_record_is_refused_and_changes_nothing(
    models: Path, sessions: SessionFactory
) -> None:
    """Issue 16 item 1: a reload during a database outage answered 200, then the reconcile
    went back to the old version once the database returned."""
    outage = Outage(sessions)
    service = make_service(models, cast(SessionFactory, outage), [])
    service.start(pinned="v1")
    follower = make_service(models, sessions, [])
    follower.start(pinned=None)
    assert serving_version(service) == serving_version(follower) == "v1"

    outage.down = True
    with pytest.raises(RegistryUnavailableError, match="could not record it") as refused:
        service.activate("v2")
    assert refused.value.status_code == 503 and refused.value.headers()["Retry-After"]
    assert serving_version(service) == "v1"
    service.reconcile()  # SQL down: nothing changes
    outage.down = False
    service.reconcile()
    follower.reconcile()
    assert serving_version(service) == serving_version(follower) == "v1"

    acknowledged = service.activate("v2")  # recorded: acknowledged, and it stays
    outage.down = True
    service.reconcile()
    outage.down = False
    service.reconcile()
    follower.reconcile()
    assert serving_version(service) == serving_version(follower) == acknowledged.version == "v2"


def test_a_hung_registry_bounds_the_reload_and_changes_nothing(
    models: Path, sessions: SessionFactory
) -> None:
    outage = Outage(sessions)
    service = make_service(models, cast(SessionFactory, outage), [])
    service.registry.timeout_seconds = 0.2
    service.start(pinned="v1")
    outage.hung.set()
    try:
        with pytest.raises(RegistryUnavailableError, match=r"no answer within 0\.2 s"):
            service.activate("v2")
        assert serving_version(service) == "v1"
    finally:
        outage.hung.clear()
        outage.release.set()


def test_while_sql_is_down_a_stale_redis_key_is_not_followed(
    models: Path, sessions: SessionFactory
) -> None:
    outage = Outage(sessions)
    service = make_service(models, cast(SessionFactory, outage), [])
    service.broadcast = cast(Any, StaleAnnouncement("v1"))
    service.start(pinned=None)
    service.activate("v2")  # recorded in SQL; say Redis missed the publish
    outage.down = True
    service.reconcile()
    assert serving_version(service) == "v2"


def test_a_start_while_sql_is_down_serves_the_announced_version_not_the_newest(
    models: Path, sessions: SessionFactory
) -> None:
    mark_active(sessions, name="v1", path=models / "v1", manifest={})
    outage = Outage(sessions)
    outage.down = True
    service = make_service(models, cast(SessionFactory, outage), [])
    service.broadcast = cast(Any, StaleAnnouncement("v1"))
    service.start(pinned=None)
    assert serving_version(service) == "v1"  # v2 is newer, but v1 is what was acknowledged


def test_a_pin_served_while_sql_was_down_is_recorded_once_it_answers(
    models: Path, sessions: SessionFactory
) -> None:
    mark_active(sessions, name="v2", path=models / "v2", manifest={})
    outage = Outage(sessions)
    outage.down = True
    service = make_service(models, cast(SessionFactory, outage), [])
    service.start(pinned="v1")
    assert serving_version(service) == "v1" and active_version(sessions) == "v2"
    outage.down = False
    service.reconcile()  # the pin is recorded, so the reconcile does not undo it
    assert serving_version(service) == "v1" and active_version(sessions) == "v1"


def test_a_start_whose_newest_version_is_corrupt_serves_the_newest_that_verifies(
    models: Path, sessions: SessionFactory
) -> None:
    """Issue 16 item 6: a corrupt newest run directory left the worker at 503 forever."""
    save_version(models, "v3", seed=3)
    (models / "v3" / "model.safetensors").write_bytes(b"truncated")
    service = make_service(models, sessions, [])
    service.start(pinned=None)
    assert serving_version(service) == "v2"
    assert active_version(sessions) == "v2"
    records = {record.name: record for record in registered_versions(sessions)}
    assert records["v3"].status == "failed" and "sha256" in (records["v3"].message or "")


def test_a_version_that_failed_while_serving_stays_failed_across_a_restart(
    models: Path, sessions: SessionFactory
) -> None:
    """Issue 16 item 8: a restart cleared a version's failed mark."""
    service = make_service(models, sessions, [])
    service.start(pinned=None)
    assert serving_version(service) == "v2"
    service.report_fault(ModelFaultError(version="v2", reason="non-finite scores", kind="x"))
    service.registry.flush_fault_marks()

    restarted = make_service(models, sessions, [])
    restarted.start(pinned=None)
    assert serving_version(restarted) == "v1"  # v2 is newer, but marked failed
    statuses = {record.name: record.status for record in registered_versions(sessions)}
    assert statuses == {"v1": "active", "v2": "failed"}


def test_when_every_version_is_marked_failed_the_newest_still_serves(
    models: Path, sessions: SessionFactory
) -> None:
    for version in ("v1", "v2"):
        mark_failed(
            sessions,
            name=version,
            path=models / version,
            message="non-finite scores",
            manifest=read_manifest(models / version),
        )
    service = make_service(models, sessions, [])
    service.start(pinned=None)
    assert serving_version(service) == "v2"  # degraded beats down; the marks stay
    assert {record.status for record in registered_versions(sessions)} == {"failed"}


def test_a_version_refused_after_start_up_stays_failed_across_a_restart(
    models: Path, sessions: SessionFactory
) -> None:
    service = make_service(models, sessions, [])
    service.start(pinned=None)
    shutil.copytree(models / "v1", models / "bad")  # written after start: never registered
    (models / "bad" / "model.safetensors").write_bytes(b"truncated")
    with pytest.raises(ModelRefusedError):
        service.activate("bad")
    make_service(models, sessions, []).start(pinned=None)  # registers every run dir again
    record = {record.name: record for record in registered_versions(sessions)}["bad"]
    assert record.status == "failed" and "sha256" in (record.message or "")


def test_a_registry_read_overtaken_by_an_announcement_does_not_undo_it(
    models: Path, sessions: SessionFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Found by bench/soak.py: the reconcile read v1 as active, the announcement of v2 was
    followed meanwhile, and the reconcile then swapped v1 back until its next round."""
    mark_active(sessions, name="v1", path=models / "v1", manifest={})
    follower = make_service(models, sessions, [])
    follower.start(pinned=None)
    assert serving_version(follower) == "v1"
    stale = follower.registry.view()

    def read_while_v2_is_announced() -> RegistryView:
        mark_active(sessions, name="v2", path=models / "v2", manifest={})
        follower.follow("v2")  # the pub/sub message, handled while the read was in flight
        return stale

    monkeypatch.setattr(follower.registry, "view", read_while_v2_is_announced)
    follower.reconcile()
    assert serving_version(follower) == "v2"


def current_sha(service: ModelService) -> str | None:
    current = service.holder.current
    return current.weights_sha256 if current is not None else None


def test_a_retrain_under_the_same_name_is_followed_by_its_weights(
    models: Path, sessions: SessionFactory
) -> None:
    """Issue 21 item 2: workers compared names, so a reload of a retrained `v1` left the
    other workers on the old weights, all labelled `v1`."""
    leader = make_service(models, sessions, [])
    follower_swapped: list[str] = []
    follower = make_service(models, sessions, follower_swapped)
    leader.activate("v1")
    follower.reconcile()
    old = current_sha(follower)
    assert old is not None and old == current_sha(leader)

    save_version(models, "v1", seed=7)  # the trainer writes into the existing folder
    activation = leader.activate("v1")
    assert activation.sha256 == current_sha(leader) != old
    follower.reconcile()
    assert current_sha(follower) == activation.sha256
    assert follower_swapped == ["v1", "v1"]
    follower.reconcile()  # the same weights: nothing reloaded
    assert follower_swapped == ["v1", "v1"]
    follower.follow("v1", old)  # a late announcement of the old weights: not on disk now
    assert current_sha(follower) == activation.sha256


def test_an_exception_in_a_reconcile_round_never_ends_the_loop(
    models: Path, sessions: SessionFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 21 item 4: the reconcile loop, `follow` and the listener survive anything."""
    service = make_service(models, sessions, [])
    service.reconcile_seconds = 0.01
    rounds: list[int] = []

    def explode() -> None:
        rounds.append(1)
        raise RecursionError("maximum recursion depth exceeded")

    monkeypatch.setattr(service, "reconcile", explode)
    monkeypatch.setattr(service, "_load", lambda version: explode())
    service.follow("v2")  # never raises
    service.run_background()
    try:
        deadline = time.monotonic() + 30
        while len(rounds) < 4 and time.monotonic() < deadline:
            time.sleep(0.01)
    finally:
        service.stop()
    assert len(rounds) >= 4


def _damage(run_dir: Path, kind: str) -> None:
    text = (run_dir / "manifest.json").read_text()
    if kind == "string-temperature":
        manifest = json.loads(text)
        manifest["model_config"]["temperature"] = "1.0"
        text = json.dumps(manifest)
    elif kind == "5000-digit-int":
        text = text.replace('"num_items": ', '"num_items": ' + "9" * 5_000 + ', "x": ', 1)
    else:
        assert kind == "nested-100000-deep"
        text = text.replace(
            '"metrics": ', '"metrics": ' + "[" * 100_000 + "]" * 100_000 + ', "m": ', 1
        )
    (run_dir / "manifest.json").write_text(text)


MANIFEST_KINDS = ["string-temperature", "5000-digit-int", "nested-100000-deep"]


@pytest.mark.parametrize("kind", MANIFEST_KINDS)
def test_a_manifest_of_every_hostile_kind_is_refused_marked_failed_and_skipped_at_start(
    models: Path, sessions: SessionFactory, kind: str
) -> None:
    """Issue 21 item 4: these reloads answered 500 without marking the version failed, and
    as the newest folder at start the process exited."""
    _damage(models / "v2", kind)
    service = make_service(models, sessions, [])
    service.start(pinned=None)
    assert serving_version(service) == "v1"
    statuses = {record.name: record.status for record in registered_versions(sessions)}
    assert statuses["v2"] == "failed"
    with pytest.raises(ModelRefusedError) as refused:
        service.activate("v2")
    assert refused.value.status_code == 422
    assert serving_version(service) == "v1"
    assert {r.name: r.status for r in registered_versions(sessions)}["v2"] == "failed"
    restarted = make_service(models, sessions, [])
    restarted.start(pinned=None)
    assert serving_version(restarted) == "v1" and active_version(sessions) == "v1"
