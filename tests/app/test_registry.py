"""The SQL registry: version rows from run directories, activation, catalog, audit, and the
request-log writer (batches off the hot path, counted failures, recovery, bounded memory)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from app_helpers import ITEMS
from model_versions import migrated_sqlite, save_version, two_versions
from sqlalchemy import func, select

from app.db import make_engine, make_session_factory, run_migrations
from app.holder import ModelHolder
from app.models_sql import AdminAudit, CatalogItem, ModelVersion, RequestLogRow
from app.registry import (
    SessionFactory,
    SqlRequestLog,
    active_version,
    discover_versions,
    list_registered,
    load_catalog,
    mark_active,
    mark_failed,
    read_artist_urls,
    register_run,
    write_audit,
)
from app.request_log import RequestLogEntry


@pytest.fixture
def models(tmp_path: Path) -> Path:
    return two_versions(tmp_path / "models")


@pytest.fixture
def sessions(tmp_path: Path) -> SessionFactory:
    return migrated_sqlite(tmp_path / "registry.db")[1]


def entry(number: int, *, fallback: str | None = None) -> RequestLogEntry:
    return RequestLogEntry(
        request_id=f"r{number}",
        model_version="v1",
        support_size=number % 7,
        k=10,
        latency_ms=1.5 * number,
        cache_hit=number % 2 == 0,
        fallback=fallback,
    )


def count_log_rows(sessions: SessionFactory) -> int:
    with sessions() as session:
        return session.scalar(select(func.count()).select_from(RequestLogRow)) or 0


def test_discover_registers_each_run_dir_and_refuses_unknown_formats(
    models: Path, sessions: SessionFactory
) -> None:
    broken = save_version(models, "v3", seed=3)
    manifest = json.loads((broken / "manifest.json").read_text())
    manifest["format_version"] = 99
    (broken / "manifest.json").write_text(json.dumps(manifest))

    records = {record.name: record for record in discover_versions(sessions, models)}

    assert set(records) == {"v1", "v2", "v3"}
    assert records["v1"].status == "available"
    assert (
        records["v1"].sha256
        == json.loads((models / "v1" / "manifest.json").read_text())["weights_sha256"]
    )
    assert records["v2"].metrics == {"catalog": {"Recall@20": 0.52}}
    assert records["v3"].status == "failed"
    assert records["v3"].message is not None and "format_version 99" in records["v3"].message
    # Discovering again updates rows in place instead of duplicating them.
    discover_versions(sessions, models)
    assert [record.name for record in list_registered(sessions)].count("v1") == 1


def test_mark_active_keeps_exactly_one_active_version(
    models: Path, sessions: SessionFactory
) -> None:
    holder = ModelHolder(models_dir=models, device="cpu")
    assert active_version(sessions) is None
    first = mark_active(sessions, holder.load("v1"))
    assert first.status == "active" and first.activated_at is not None
    mark_active(sessions, holder.load("v2"))

    assert active_version(sessions) == "v2"
    statuses = {record.name: record.status for record in list_registered(sessions)}
    assert statuses == {"v1": "available", "v2": "active"}


def test_a_failed_version_becomes_available_again_once_its_manifest_reads(
    models: Path, sessions: SessionFactory
) -> None:
    mark_failed(sessions, name="v1", path=models / "v1", message="sha256 mismatch")
    assert {r.name: r.status for r in list_registered(sessions)} == {"v1": "failed"}
    record = register_run(sessions, models / "v1")
    assert (record.status, record.message) == ("available", None)


def test_catalog_is_replaced_from_the_served_model(
    models: Path, sessions: SessionFactory, tmp_path: Path
) -> None:
    artists = tmp_path / "artists.dat"
    artists.write_text(
        "id\tname\turl\tpictureURL\na3\tArtist 3\thttp://www.last.fm/music/3\thttp://p/3.jpg\n",
        encoding="utf-8",
    )
    serving = ModelHolder(models_dir=models, device="cpu").load("v1")

    assert load_catalog(sessions, serving, urls=read_artist_urls(artists)) == len(ITEMS)
    assert load_catalog(sessions, serving) == len(ITEMS)  # second load replaces, no duplicates
    load_catalog(sessions, serving, urls=read_artist_urls(artists))

    with sessions() as session:
        rows = {row.item_id: row for row in session.scalars(select(CatalogItem))}
    assert len(rows) == len(ITEMS)
    assert (rows["a0"].name, rows["a0"].popularity, rows["a0"].url) == ("Artist 0", 40.0, None)
    assert rows["a3"].url == "http://www.last.fm/music/3"
    assert rows["a39"].popularity == 1.0


def test_audit_rows_are_written(sessions: SessionFactory) -> None:
    write_audit(
        sessions,
        actor="anonymous",
        action="reload_model",
        target="../x",
        allowed=False,
        status_code=401,
        message="missing token",
        client_ip="10.0.0.1",
    )
    with sessions() as session:
        row = session.scalars(select(AdminAudit)).one()
    assert (row.actor, row.action, row.target, row.allowed, row.status_code) == (
        "anonymous",
        "reload_model",
        "../x",
        False,
        401,
    )
    assert row.at is not None


def test_request_log_writes_batches_in_the_background(sessions: SessionFactory) -> None:
    log = SqlRequestLog(sessions, batch_size=16, flush_seconds=0.05)
    started = time.perf_counter()
    for number in range(50):
        log.record(entry(number, fallback="popularity" if number == 0 else None))
    recording_seconds = time.perf_counter() - started
    assert log.flush(timeout=5)
    log.close()

    assert recording_seconds < 0.5  # recording never waits for SQL
    assert (log.written, log.failed, log.dropped) == (50, 0, 0)
    with sessions() as session:
        rows = {row.request_id: row for row in session.scalars(select(RequestLogRow))}
    assert len(rows) == 50
    first = rows["r0"]
    assert (first.model_version, first.k, first.fallback, first.cache_hit) == (
        "v1",
        10,
        "popularity",
        True,
    )
    assert rows["r3"].latency_ms == pytest.approx(4.5)
    assert rows["r3"].support_size == 3


def test_request_log_counts_failures_and_recovers_when_the_database_returns(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'late.db'}"
    sessions = make_session_factory(make_engine(url))
    failures: list[int] = []
    log = SqlRequestLog(
        sessions, batch_size=4, flush_seconds=0.02, max_backoff_seconds=0.05,
        on_failure=failures.append,
    )  # fmt: skip
    for number in range(6):
        log.record(entry(number))  # no tables yet: every write fails
    assert log.flush(timeout=5)
    assert sum(failures) == 6 and log.failed == 6
    assert log.last_error is not None

    run_migrations(url)  # the database "comes back"
    for number in range(6, 10):
        log.record(entry(number))
    assert log.flush(timeout=5)
    log.close()

    assert log.written == 4 and log.last_error is None
    assert count_log_rows(sessions) == 4


def test_request_log_memory_is_bounded_and_drops_the_oldest(sessions: SessionFactory) -> None:
    dropped: list[int] = []
    # A long flush interval keeps the writer asleep while the queue overflows.
    log = SqlRequestLog(
        sessions, capacity=3, batch_size=100, flush_seconds=30, on_drop=dropped.append
    )
    for number in range(5):
        log.record(entry(number))
    assert log.pending() == 3
    log.close(timeout=5)

    assert (log.dropped, sum(dropped)) == (2, 2)
    with sessions() as session:
        kept = sorted(session.scalars(select(RequestLogRow.request_id)))
    assert kept == ["r2", "r3", "r4"]
    log.record(entry(9))  # after close: ignored, not raised
    assert count_log_rows(sessions) == 3


def test_model_version_rows_have_unique_names(sessions: SessionFactory, models: Path) -> None:
    register_run(sessions, models / "v1")
    with sessions() as session:
        session.add(ModelVersion(name="v1", path="x", metrics={}, status="available"))
        with pytest.raises(Exception, match="UNIQUE"):
            session.commit()
