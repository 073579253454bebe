"""SQL plumbing: the engine and session factory built from DATABASE_URL, and Alembic upgrades.

SQLite (the embedded default) and Postgres (`postgresql+psycopg://`) are supported. Nothing is
built at import time; the lifespan calls `open_database(settings.database_url)`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, text
from sqlalchemy.orm import Session, sessionmaker

logger = logging.getLogger(__name__)

# Package data of `app` (pyproject.toml), so an installed wheel migrates without the source tree.
MIGRATIONS_DIR = Path(__file__).resolve().parents[1] / "migrations"
POSTGRES_CONNECT_TIMEOUT_SECONDS = 3
# libpq: a peer that stops answering (a partition, a dead host) fails a connection in about
# 15 s instead of hanging it until the kernel gives up (minutes).
POSTGRES_LIVENESS = {
    "keepalives": 1,
    "keepalives_idle": 10,
    "keepalives_interval": 5,
    "keepalives_count": 2,
    "tcp_user_timeout": 15_000,
}

SessionFactory = sessionmaker[Session]


def normalise_url(database_url: str) -> str:
    """Map the bare Postgres schemes to the psycopg 3 driver this project installs."""
    for prefix in ("postgres://", "postgresql://"):
        if database_url.startswith(prefix):
            return "postgresql+psycopg://" + database_url.removeprefix(prefix)
    return database_url


def make_engine(database_url: str) -> Engine:
    """An engine with pre-ping, so connections killed by a DB restart are replaced silently."""
    url = normalise_url(database_url)
    if url.startswith("sqlite"):
        # Request-log writer thread and threadpool routes share the pool across threads.
        return create_engine(
            url, connect_args={"check_same_thread": False}, pool_pre_ping=True, future=True
        )
    connect_args: dict[str, object] = {}
    if url.startswith("postgresql"):
        # A dead DB must fail a connection attempt quickly, never hang a worker for minutes.
        connect_args["connect_timeout"] = POSTGRES_CONNECT_TIMEOUT_SECONDS
        connect_args.update(POSTGRES_LIVENESS)
    return create_engine(url, connect_args=connect_args, pool_pre_ping=True, future=True)


def make_session_factory(engine: Engine) -> SessionFactory:
    return sessionmaker(bind=engine, expire_on_commit=False)


@dataclass(frozen=True)
class Database:
    """The service's database: one engine and its session factory."""

    engine: Engine
    sessions: SessionFactory

    def status(self) -> str:
        """'ok' or 'down: <reason>' (pings the database; bounded by the connect timeout)."""
        return database_status(self.engine)

    def close(self) -> None:
        self.engine.dispose()


def open_database(database_url: str, *, migrate: bool | None) -> Database:
    """Engine and sessions for `database_url`, after `alembic upgrade head` when `migrate`
    (None: when the database is SQLite, so the embedded default needs no separate step; the
    workers of one server take turns through a lock file beside the database).

    Never raises for a database that is down: a failed migration is logged and the service
    starts without it (writes are then counted as failed by their owners)."""
    engine = make_engine(database_url)
    if migrate is None:
        migrate = engine.dialect.name == "sqlite"
    if migrate:
        try:
            with _migration_lock(engine):
                run_migrations(database_url)
        except Exception as error:  # a down DB must not stop the service from starting
            logger.error("migrations failed at start (continuing without): %s", error)
    return Database(engine=engine, sessions=make_session_factory(engine))


@contextlib.contextmanager
def _migration_lock(engine: Engine) -> Iterator[None]:
    """For a SQLite file: an exclusive lock on `<file>.migrate.lock`, so concurrent workers
    never run the same migration twice; elsewhere nothing (Postgres runs a one-shot job)."""
    database = engine.url.database
    if engine.dialect.name != "sqlite" or not database or database == ":memory:":
        yield
        return
    with open(f"{database}.migrate.lock", "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def schema_missing(error: BaseException) -> bool:
    """Whether a database error says the tables are not there (the database answered: it is
    not down, it was never migrated)."""
    text = str(error).lower()
    return "no such table" in text or ("relation" in text and "does not exist" in text)


def migrations_dir() -> Path:
    if (MIGRATIONS_DIR / "env.py").is_file():
        return MIGRATIONS_DIR
    raise FileNotFoundError(f"no Alembic env.py in {MIGRATIONS_DIR} (a broken install?)")


def alembic_config(database_url: str) -> Config:
    """The Alembic config for `database_url` (script location found by `migrations_dir`)."""
    config = Config()
    config.set_main_option("script_location", str(migrations_dir()))
    # configparser interpolation: a literal '%' (URL-encoded passwords) must be doubled.
    config.set_main_option("sqlalchemy.url", normalise_url(database_url).replace("%", "%%"))
    return config


def run_migrations(database_url: str) -> None:
    """`alembic upgrade head` against `database_url`."""
    command.upgrade(alembic_config(database_url), "head")
    logger.info("database migrated to head")


def first_line(error: BaseException, *, limit: int = 200) -> str:
    """A database error in one short line for logs and status fields (a driver's message can
    run to pages); its type's name when the message is empty."""
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:limit]


def database_status(engine: Engine) -> str:
    """'ok', or 'down: <reason>' (one line) for /health."""
    try:
        with engine.connect() as connection:
            connection.execute(text("SELECT 1"))
    except Exception as error:  # any driver error means "down" here; /health must answer
        return f"down: {first_line(error)}"
    return "ok"
