"""The admin audit writer: rows land in SQL, texts cut to their columns, and rows recorded while
the database is down land when it returns (a refused reload during an outage keeps its row)."""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select
from storage_helpers import SPOOL_BYTES

from app.storage.audit_log import AuditLog
from app.storage.db import make_engine, make_session_factory, run_migrations
from app.storage.tables import AdminAudit


def test_audit_rows_wait_out_an_outage_and_land(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'audit.db'}"
    sessions = make_session_factory(make_engine(url))  # no tables yet: the database is "down"
    log = AuditLog(sessions, spool_dir=tmp_path / "spool", spool_max_bytes=SPOOL_BYTES,
                   flush_seconds=0.02, max_backoff_seconds=0.05)  # fmt: skip
    log.record(
        actor="token",
        action="reload_model",
        target="v" * 300,
        allowed=False,
        status_code=503,
        message="the model registry could not record it",
        client_ip="127.0.0.1",
    )
    assert not log.flush(timeout=0.3) and log.pending() == 1
    run_migrations(url)
    assert log.flush(timeout=10)
    log.close()
    with sessions() as session:
        row = session.scalars(select(AdminAudit)).one()
    assert (row.actor, row.action, row.allowed, row.status_code) == (
        "token", "reload_model", False, 503,
    )  # fmt: skip
    assert row.target == "v" * 256 and row.at is not None
