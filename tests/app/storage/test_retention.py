"""`app.storage.retention` and `tanp-serve prune`: old request-log and audit rows go, the rest
stay (issue 21 item 7: nothing pruned either table)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from model_versions import migrated_sqlite
from sqlalchemy import func, insert, select

from app.cli import main
from app.storage.retention import parse_age, prune
from app.storage.tables import AdminAudit, RequestLogRow


def fill(url_and_sessions: tuple[str, object], now: datetime) -> None:
    _, sessions = url_and_sessions
    with sessions.begin() as session:  # type: ignore[attr-defined]
        for days in (1, 29, 31, 400):
            moment = now - timedelta(days=days)
            session.execute(
                insert(RequestLogRow).values(
                    request_id=f"r{days}", model_version="v1", support_size=1, k=3,
                    latency_ms=1.0, cache_hit=False, fallback=None, created_at=moment,
                )
            )  # fmt: skip
            session.execute(
                insert(AdminAudit).values(
                    at=moment, actor="anonymous", action="list_models", target=None,
                    allowed=False, status_code=401, message=None, client_ip="127.0.0.1",
                )
            )  # fmt: skip


def counts(sessions: object) -> tuple[int, int]:
    with sessions() as session:  # type: ignore[operator]
        return (
            session.scalar(select(func.count()).select_from(RequestLogRow)),
            session.scalar(select(func.count()).select_from(AdminAudit)),
        )


def test_prune_deletes_only_rows_older_than_the_cut(tmp_path: Path) -> None:
    database = migrated_sqlite(tmp_path / "prune.db")
    now = datetime.now(UTC)
    fill(database, now)
    deleted = prune(database[1], before=now - timedelta(days=30))
    assert deleted == {"request_log": 2, "admin_audit": 2}
    assert counts(database[1]) == (2, 2)


def test_the_prune_command_reads_database_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    database = migrated_sqlite(tmp_path / "prune.db")
    fill(database, datetime.now(UTC))
    monkeypatch.setenv("DATABASE_URL", database[0])
    assert main(["prune", "--older-than", "30d"]) == 0
    assert "request_log: 2 rows deleted" in capsys.readouterr().out
    assert counts(database[1]) == (2, 2)
    assert main(["prune", "--older-than", "thirty days"]) == 2


@pytest.mark.parametrize(
    ("text", "age"),
    [("30d", timedelta(days=30)), ("12h", timedelta(hours=12)), (" 90m", timedelta(minutes=90))],
)
def test_ages_read_as_written(text: str, age: timedelta) -> None:
    assert parse_age(text) == age
