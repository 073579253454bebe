"""The admin audit log: one row per admin call, allowed or refused, written through a spool.

`AuditLog.record` never blocks and never fails the call it describes; rows recorded while the
database is down wait in the spool (docs/spool.md) and land when it answers again, so a
refused reload during an outage still leaves its audit row. Knows nothing about HTTP.
"""

from __future__ import annotations

from datetime import UTC, datetime

from app.storage.spooled_writer import SpooledSqlWriter
from app.storage.tables import AdminAudit


class AuditLog(SpooledSqlWriter):
    """A SpooledSqlWriter of `admin_audit` rows."""

    model = AdminAudit

    def record(
        self,
        *,
        actor: str,
        action: str,
        target: str | None,
        allowed: bool,
        status_code: int,
        message: str | None,
        client_ip: str | None,
    ) -> None:
        """Queue one audit row (texts cut to their columns; the time is now)."""
        self.add(
            {
                "at": datetime.now(UTC),
                "actor": actor[:16],
                "action": action[:64],
                "target": None if target is None else target[:256],
                "allowed": allowed,
                "status_code": status_code,
                "message": message,
                "client_ip": None if client_ip is None else client_ip[:64],
            }
        )
