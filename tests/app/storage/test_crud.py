"""The SQL registry and catalog functions of `app.storage.crud` against a migrated SQLite file."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from model_versions import migrated_sqlite

from app.storage.crud import (
    CatalogRecord,
    active_version,
    catalog_rows,
    failed_versions,
    mark_active,
    mark_failed,
    refresh_catalog,
    register_version,
    registered_versions,
    replace_catalog,
)
from app.storage.db import SessionFactory
from app.storage.tables import ModelVersion


@pytest.fixture
def sessions(tmp_path: Path) -> SessionFactory:
    return migrated_sqlite(tmp_path / "registry.db")[1]


def manifest(seed: int) -> dict[str, Any]:
    return {
        "weights_sha256": f"{seed:064d}",
        "metrics": {"catalog": {"Recall@20": 0.5 + seed / 100}},
        "created_at": f"2025-01-0{seed}T00:00:00+00:00",
    }


def statuses(sessions: SessionFactory) -> dict[str, str]:
    return {record.name: record.status for record in registered_versions(sessions)}


def test_register_version_inserts_then_updates_in_place(sessions: SessionFactory) -> None:
    first = register_version(sessions, name="v1", path=Path("/m/v1"), manifest=manifest(1))
    assert (first.status, first.sha256, first.metrics) == (
        "available",
        f"{1:064d}",
        {"catalog": {"Recall@20": 0.51}},
    )
    assert first.created_at.isoformat() == "2025-01-01T00:00:00+00:00"
    register_version(sessions, name="v1", path=Path("/m/v1"), manifest=manifest(2))
    records = registered_versions(sessions)
    assert [(record.name, record.sha256) for record in records] == [("v1", f"{2:064d}")]


def test_an_unreadable_manifest_is_registered_failed_with_its_reason(
    sessions: SessionFactory,
) -> None:
    record = register_version(
        sessions, name="v3", path=Path("/m/v3"), manifest=None, error="format_version 99"
    )
    assert (record.status, record.message) == ("failed", "format_version 99")


def test_mark_active_keeps_exactly_one_active_version(sessions: SessionFactory) -> None:
    assert active_version(sessions) is None
    first = mark_active(sessions, name="v1", path=Path("/m/v1"), manifest=manifest(1))
    assert first.status == "active" and first.activated_at is not None
    mark_active(sessions, name="v2", path=Path("/m/v2"), manifest=manifest(2))
    assert active_version(sessions) == "v2"
    assert statuses(sessions) == {"v1": "available", "v2": "active"}


def test_a_failed_version_becomes_available_again_once_its_manifest_reads(
    sessions: SessionFactory,
) -> None:
    mark_failed(sessions, name="v1", path=Path("/m/v1"), message="sha256 mismatch")
    assert statuses(sessions) == {"v1": "failed"}
    record = register_version(sessions, name="v1", path=Path("/m/v1"), manifest=manifest(1))
    assert (record.status, record.message) == ("available", None)


def test_a_failed_mark_survives_re_registration_until_the_weights_change(
    sessions: SessionFactory,
) -> None:
    """A restart registers every run directory again: the same weights stay failed."""
    register_version(sessions, name="v1", path=Path("/m/v1"), manifest=manifest(1))
    mark_failed(sessions, name="v1", path=Path("/m/v1"), message="non-finite scores")
    record = register_version(sessions, name="v1", path=Path("/m/v1"), manifest=manifest(1))
    assert (record.status, record.message) == ("failed", "non-finite scores")
    retrained = register_version(sessions, name="v1", path=Path("/m/v1"), manifest=manifest(2))
    assert (retrained.status, retrained.message) == ("available", None)
    mark_failed(sessions, name="v1", path=Path("/m/v1"), message="non-finite scores")
    activated = mark_active(sessions, name="v1", path=Path("/m/v1"), manifest=manifest(2))
    assert (activated.status, activated.message) == ("active", None)  # an operator's choice
    assert failed_versions(sessions) == {}
    mark_failed(sessions, name="v2", path=Path("/m/v2"), message="bad probe")
    assert failed_versions(sessions) == {"v2": "bad probe"}


def test_model_version_rows_have_unique_names(sessions: SessionFactory) -> None:
    register_version(sessions, name="v1", path=Path("/m/v1"), manifest=manifest(1))
    with sessions() as session:
        session.add(ModelVersion(name="v1", path="x", metrics={}, status="available"))
        with pytest.raises(Exception, match="UNIQUE"):
            session.commit()


ROWS = [
    CatalogRecord(item_id="a1", name="Artist 1", url="http://www.last.fm/music/1", popularity=2.0),
    CatalogRecord(item_id="a0", name="Artist 0", url=None, popularity=5.0),
    CatalogRecord(item_id="b9", name=None, url=None, popularity=0.0),
]


def test_the_catalog_is_replaced_whole(sessions: SessionFactory) -> None:
    assert replace_catalog(sessions, rows=ROWS) == 3
    assert replace_catalog(sessions, rows=ROWS[:2]) == 2  # replaces, no duplicates
    assert catalog_rows(sessions) == [ROWS[1], ROWS[0]]  # ordered by item id


def test_refresh_writes_only_when_the_catalog_differs(sessions: SessionFactory) -> None:
    assert refresh_catalog(sessions, rows=ROWS) is True
    assert refresh_catalog(sessions, rows=list(reversed(ROWS))) is False
    renamed = [ROWS[0], ROWS[1], CatalogRecord(item_id="b9", name="B", url=None, popularity=0.0)]
    assert refresh_catalog(sessions, rows=renamed) is True
    assert {row.item_id: row.name for row in catalog_rows(sessions)}["b9"] == "B"


@pytest.mark.integration
def test_non_finite_metrics_are_stored_as_null_on_postgres(
    postgres_sessions: SessionFactory,
) -> None:
    """Issue 21 item 6: Postgres' json type refuses NaN, so a run whose metrics held one made
    the whole registry look down at start and every reload of it answer 503."""
    nan_run = manifest(1) | {
        "metrics": {"catalog": {"Recall@20": float("nan"), "HR@10": float("inf")}, "n": [1.5]}
    }
    register_version(postgres_sessions, name="nan", path=Path("/m/nan"), manifest=nan_run)
    mark_active(postgres_sessions, name="nan", path=Path("/m/nan"), manifest=nan_run)
    (record,) = registered_versions(postgres_sessions)
    assert record.status == "active" and active_version(postgres_sessions) == "nan"
    assert record.metrics == {"catalog": {"Recall@20": None, "HR@10": None}, "n": [1.5]}
