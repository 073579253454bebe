"""Fixtures of the storage tests: a migrated SQLite database, a migrated Postgres one."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from model_versions import migrated_sqlite

from app.storage.db import SessionFactory, make_engine, make_session_factory, run_migrations


@pytest.fixture
def sessions(tmp_path: Path) -> SessionFactory:
    return migrated_sqlite(tmp_path / "log.db")[1]


POSTGRES_ADMIN = "host=127.0.0.1 port=5432 user=postgres dbname=postgres connect_timeout=3"


@pytest.fixture
def postgres_sessions() -> Iterator[SessionFactory]:
    """A fresh, migrated database on the machine's real Postgres, dropped afterwards."""
    name = f"tanp_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN, autocommit=True)
    except psycopg.OperationalError as error:
        pytest.skip(f"no Postgres on 127.0.0.1:5432: {error}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        url = f"postgresql+psycopg://postgres@127.0.0.1:5432/{name}"
        engine = make_engine(url)
        try:
            run_migrations(url)
            yield make_session_factory(engine)
        finally:
            engine.dispose()
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
