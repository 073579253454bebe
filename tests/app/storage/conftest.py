"""Fixtures of the storage tests: a migrated SQLite database, a migrated Postgres one."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from model_versions import migrated_sqlite

from app.storage.db import SessionFactory, make_engine, make_session_factory, run_migrations
from tests.support.postgres import database_url, throwaway_database


@pytest.fixture
def sessions(tmp_path: Path) -> SessionFactory:
    return migrated_sqlite(tmp_path / "log.db")[1]


@pytest.fixture
def postgres_sessions() -> Iterator[SessionFactory]:
    """A fresh, migrated database on the machine's real Postgres, dropped afterwards."""
    with throwaway_database() as name:
        url = database_url(name)
        engine = make_engine(url)
        try:
            run_migrations(url)
            yield make_session_factory(engine)
        finally:
            engine.dispose()
