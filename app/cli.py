"""`tanp-serve`: run the service with uvicorn (`tanp-serve migrate` applies DB migrations,
`tanp-serve prune --older-than 30d` deletes old request-log and audit rows).

Settings come from the environment (SPEC section 8); each worker builds the app with the
factory, so `--workers N` works, with `app.server`'s protocol and timeouts.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys

import uvicorn

from app.server import SUPERVISOR_PID_ENV, TimedHttpProtocol, wait_for_port
from app.settings import Settings


def run_migrations_command() -> int:
    from app.storage.db import run_migrations  # type: ignore[import-not-found,unused-ignore]

    run_migrations(Settings().database_url)
    return 0


def prune_command(older_than: str) -> int:
    """Delete request-log and audit rows older than `older_than` from DATABASE_URL."""
    from datetime import UTC, datetime

    from app.storage.db import make_engine, make_session_factory
    from app.storage.retention import parse_age, prune

    try:
        age = parse_age(older_than)
    except ValueError as error:
        sys.stderr.write(f"tanp-serve prune: error: {error}\n")
        return 2
    engine = make_engine(Settings().database_url)
    try:
        deleted = prune(make_session_factory(engine), before=datetime.now(UTC) - age)
    finally:
        engine.dispose()
    sys.stdout.write(
        " ".join(f"{table}: {count} rows deleted;" for table, count in deleted.items()) + "\n"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="tanp-serve", description=__doc__)
    parser.add_argument(
        "command", nargs="?", choices=["serve", "migrate", "prune"], default="serve"
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument(
        "--older-than",
        default="30d",
        help="prune: rows older than this age (30d, 12h, 90m, 3600s) are deleted",
    )
    args = parser.parse_args(argv)
    if args.command == "migrate":
        return run_migrations_command()
    if args.command == "prune":
        return prune_command(args.older_than)
    settings = Settings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(levelname)s: %(message)s")
    if not wait_for_port(args.host, args.port, seconds=settings.bind_wait_seconds):
        sys.stderr.write(f"tanp-serve: error: cannot bind {args.host}:{args.port}\n")
        return 1
    if args.workers > 1:
        # read by every worker's app factory (`die_with_parent`)
        os.environ[SUPERVISOR_PID_ENV] = str(os.getpid())
    uvicorn.run(
        "app.main:create_app_from_env",
        factory=True,
        host=args.host,
        port=args.port,
        workers=args.workers,
        http=TimedHttpProtocol,
        timeout_keep_alive=settings.keep_alive_seconds,
        # past it uvicorn answers 503 itself (plain text, not our JSON shape)
        limit_concurrency=settings.limit_concurrency or None,
        timeout_graceful_shutdown=settings.graceful_shutdown_seconds,
        log_level=settings.log_level.lower(),
        access_log=False,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
