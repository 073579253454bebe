"""A throwaway database on the machine's real Postgres (127.0.0.1:5432, trust auth): created
through the `postgres` maintenance database, dropped afterwards; the test skips without one."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator

import psycopg
import pytest

POSTGRES_HOST, POSTGRES_PORT = "127.0.0.1", 5432
POSTGRES_ADMIN = f"host={POSTGRES_HOST} port={POSTGRES_PORT} user=postgres dbname=postgres"


@contextlib.contextmanager
def throwaway_database() -> Iterator[str]:
    """Yield the name of a fresh database `tanp_test_<random>`; dropped on exit (FORCE)."""
    name = f"tanp_test_{uuid.uuid4().hex[:12]}"
    try:
        admin = psycopg.connect(POSTGRES_ADMIN + " connect_timeout=3", autocommit=True)
    except psycopg.OperationalError as error:
        pytest.skip(f"no Postgres on {POSTGRES_HOST}:{POSTGRES_PORT}: {error}")
    with admin:
        admin.execute(f'CREATE DATABASE "{name}"')
        try:
            yield name
        finally:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def database_url(name: str) -> str:
    return f"postgresql+psycopg://postgres@{POSTGRES_HOST}:{POSTGRES_PORT}/{name}"
