"""A request-log database outage never fails a recommendation and loses no row.

The app logs to a fresh database on the machine's real Postgres through a TCP proxy owned by
the test; cutting the proxy is the outage (stopping the shared Postgres server is not an
option). During the cut /v1/recommend answers 200, the failed-write counter rises and the rows
wait in the spool; once the proxy is back they are written, with the new ones.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from app_helpers import AppFactory, TestClient, state_of
from model_versions import save_version

from tests.support.network import TcpProxy, free_port
from tests.support.polling import wait_for
from tests.support.postgres import (
    POSTGRES_ADMIN,
    POSTGRES_HOST,
    POSTGRES_PORT,
    throwaway_database,
)

RECOMMEND = {"support": [{"item_id": "a1", "rating": 1}], "k": 3}


@pytest.fixture
def database() -> Iterator[str]:
    """A fresh Postgres database for this test, dropped afterwards."""
    with throwaway_database() as name:
        yield name


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    forwarder = TcpProxy((POSTGRES_HOST, POSTGRES_PORT))
    yield forwarder
    forwarder.cut()


def logged_request_ids(database: str) -> set[str]:
    """Read directly from Postgres, around the proxy."""
    with psycopg.connect(
        f"{POSTGRES_ADMIN.replace('dbname=postgres', '')} dbname={database}"
    ) as db:
        return {row[0] for row in db.execute("SELECT request_id FROM request_log")}


def metric(client: TestClient, name: str) -> float:
    match = re.search(rf"^{name} (\S+)$", client.get("/metrics").text, re.MULTILINE)
    assert match is not None, name
    return float(match.group(1))


def failed_writes(client: TestClient) -> float:
    return metric(client, "tanp_request_log_failures_total")


def dropped_rows(client: TestClient) -> float:
    return metric(client, "tanp_request_log_dropped_total")


def pending_rows(client: TestClient) -> float:
    return metric(client, "tanp_request_log_pending_rows")


def recommend(client: TestClient, request_id: str) -> None:
    response = client.post("/v1/recommend", json=RECOMMEND, headers={"X-Request-ID": request_id})
    assert response.status_code == 200
    assert response.headers["x-request-id"] == request_id


@pytest.mark.integration
def test_recommendations_survive_a_request_log_outage(
    make_client: AppFactory, tmp_path: Path, database: str, proxy: TcpProxy
) -> None:
    models = tmp_path / "models"
    save_version(models, "v1")
    client = make_client(
        models_dir=models,
        database_url=f"postgresql+psycopg://postgres@127.0.0.1:{proxy.port}/{database}",
        migrate_on_start=True,
        reconcile_seconds=60,
    )
    log = state_of(client).request_log
    assert client.get("/health").json()["db"] == "ok"

    before = {f"before-{index}" for index in range(5)}
    for request_id in sorted(before):
        recommend(client, request_id)
    assert log.flush(timeout=10)
    assert logged_request_ids(database) == before
    assert failed_writes(client) == 0

    proxy.cut()
    during = {f"during-{index}" for index in range(10)}
    for request_id in sorted(during):
        recommend(client, request_id)
    assert wait_for(lambda: failed_writes(client) > 0 and log.pending() == len(during), timeout=30)
    assert not log.flush(timeout=0.5)  # nothing can land: the rows wait in the spool
    health = client.get("/health").json()
    assert health["db"].startswith("down") and health["status"] == "degraded"
    assert pending_rows(client) == len(during)

    proxy.restore()
    after = {f"after-{index}" for index in range(5)}
    for request_id in sorted(after):
        recommend(client, request_id)
    assert log.flush(timeout=30)
    # Issue 16 item 5: the rows of the outage used to be dropped
    assert logged_request_ids(database) == before | during | after
    assert client.get("/health").json()["db"] == "ok"
    assert dropped_rows(client) == 0 and pending_rows(client) == 0


def test_the_service_starts_and_serves_with_its_database_down(
    make_client: AppFactory, tmp_path: Path
) -> None:
    models = tmp_path / "models"
    save_version(models, "v1")
    closed_port = free_port()  # nothing listens there
    client = make_client(
        models_dir=models,
        database_url=f"postgresql+psycopg://postgres@127.0.0.1:{closed_port}/nowhere",
        migrate_on_start=True,
        reconcile_seconds=60,
    )
    assert client.get("/readyz").status_code == 200
    recommend(client, "db-down-1")
    health = client.get("/health").json()
    assert (health["model_version"], health["status"]) == ("v1", "degraded")
    assert health["db"].startswith("down")
    assert wait_for(lambda: failed_writes(client) > 0, timeout=30)
    assert state_of(client).request_log.pending() == 1  # kept for when the database answers


@pytest.mark.integration
def test_a_database_without_the_schema_is_named_as_such_not_as_down(
    make_client: AppFactory, tmp_path: Path, database: str
) -> None:
    """Issue 21 item 9: a reload against a database with no tables answered "retry when the
    database is back" although the database was up."""
    models = tmp_path / "models"
    save_version(models, "v1")
    client = make_client(
        models_dir=models,
        database_url=f"postgresql+psycopg://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/{database}",
        migrate_on_start=None,  # not SQLite: never migrated implicitly
        admin_token="t",
    )
    response = client.post(
        "/admin/models/reload", json={"version": "v1"}, headers={"Authorization": "Bearer t"}
    )
    assert response.status_code == 503
    detail = response.json()["detail"]
    assert "schema is missing" in detail and "tanp-serve migrate" in detail
    assert "database is back" not in detail


def test_the_embedded_default_migrates_its_sqlite_database_at_start(
    make_client: AppFactory, tmp_path: Path
) -> None:
    """Issue 21 item 9: SQLite without MIGRATE_ON_START had no tables, so every reload
    answered 503."""
    models = tmp_path / "models"
    save_version(models, "v1")
    client = make_client(
        models_dir=models,
        database_url=f"sqlite:///{tmp_path / 'fresh.db'}",
        migrate_on_start=None,
        admin_token="t",
    )
    response = client.post(
        "/admin/models/reload", json={"version": "v1"}, headers={"Authorization": "Bearer t"}
    )
    assert response.status_code == 200
    assert client.get("/health").json()["db"] == "ok"
