"""Alembic migrations on SQLite and the machine's real Postgres: up, down, up, and no drift.

Postgres tests create a fresh database `tanp_test_<random>` through the `postgres` maintenance
database and drop it afterwards; they skip when no server answers on 127.0.0.1:5432.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Column, Integer, MetaData, inspect

from app.storage.db import alembic_config, make_engine, run_migrations
from app.storage.tables import Base
from tests.support.postgres import database_url as postgres_database_url
from tests.support.postgres import throwaway_database

TABLES = {"model_versions", "catalog_items", "request_log", "admin_audit"}


@pytest.fixture(scope="module")
def postgres_url() -> Iterator[str]:
    with throwaway_database() as name:
        yield postgres_database_url(name)


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.integration)])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrations.db'}"
        return
    url: str = request.getfixturevalue("postgres_url")
    yield url
    # The module shares one Postgres database: leave it empty for the next test.
    command.downgrade(alembic_config(url), "base")


def tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def drift(url: str, metadata: MetaData) -> list[Any]:
    engine = make_engine(url)
    try:
        with engine.connect() as connection:
            context = MigrationContext.configure(connection, opts={"compare_type": True})
            return list(compare_metadata(context, metadata))
    finally:
        engine.dispose()


def test_upgrade_downgrade_upgrade(database_url: str) -> None:
    run_migrations(database_url)
    assert tables(database_url) >= TABLES
    command.downgrade(alembic_config(database_url), "base")
    assert tables(database_url) & TABLES == set()
    run_migrations(database_url)
    assert tables(database_url) >= TABLES


def test_migrated_schema_matches_the_models(database_url: str) -> None:
    run_migrations(database_url)
    assert drift(database_url, Base.metadata) == []


def test_drift_check_notices_a_column_missing_from_the_migrations(database_url: str) -> None:
    run_migrations(database_url)
    changed = MetaData(naming_convention=Base.metadata.naming_convention)
    for table in Base.metadata.tables.values():
        table.to_metadata(changed)
    changed.tables["request_log"].append_column(Column("user_agent", Integer, nullable=True))
    differences = drift(database_url, changed)
    assert [(diff[0], diff[2], diff[3].name) for diff in differences] == [
        ("add_column", "request_log", "user_agent")
    ]


def test_migrations_do_not_depend_on_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'elsewhere.db'}"
    run_migrations(url)
    assert tables(url) >= TABLES
