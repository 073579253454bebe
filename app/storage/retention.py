"""Retention of the append-only tables: `prune` deletes request-log and admin-audit rows older
than a cut-off (`tanp-serve prune --older-than 30d`), in batches so no transaction holds the
tables for long. Knows nothing about settings or HTTP.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

from sqlalchemy import delete, select

from app.storage.db import SessionFactory
from app.storage.tables import AdminAudit, RequestLogRow

PRUNE_BATCH = 10_000
_UNITS = {"d": "days", "h": "hours", "m": "minutes", "s": "seconds"}


def parse_age(text: str) -> timedelta:
    """`30d`, `12h`, `90m` or `3600s` as a timedelta; ValueError otherwise."""
    match = re.fullmatch(r"\s*(\d{1,6})\s*([dhms])\s*", text)
    if match is None:
        raise ValueError(f"{text!r} is not an age like 30d, 12h, 90m or 3600s")
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def prune(sessions: SessionFactory, *, before: datetime) -> dict[str, int]:
    """Delete request-log rows created and audit rows written before `before`; the number of
    rows deleted per table."""
    deleted: dict[str, int] = {}
    for table, moment in ((RequestLogRow, RequestLogRow.created_at), (AdminAudit, AdminAudit.at)):
        total = 0
        while True:
            with sessions.begin() as session:
                ids = list(
                    session.scalars(select(table.id).where(moment < before).limit(PRUNE_BATCH))
                )
                if ids:
                    session.execute(delete(table).where(table.id.in_(ids)))
            total += len(ids)
            if len(ids) < PRUNE_BATCH:
                break
        deleted[table.__tablename__] = total
    return deleted
