"""The admin audit log: one row per admin call, allowed or refused, written through a spool.

`AuditLog.record` never blocks and never fails the call it describes; rows recorded while the
database is down wait in the spool (docs/spool.md) and land when it answers again, so a
refused reload during an outage still leaves its audit row. Anonymous refusals (401, 404) are
written at most `anonymous_per_minute` a minute, so a scanner cannot fill the table. Knows
nothing about HTTP.
"""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime
from typing import Any

from app.storage.spooled_writer import SpooledSqlWriter
from app.storage.tables import AdminAudit


class AuditLog(SpooledSqlWriter):
    """A SpooledSqlWriter of `admin_audit` rows."""

    model = AdminAudit

    def __init__(self, *args: Any, anonymous_per_minute: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.anonymous_per_minute = anonymous_per_minute  # None: every refusal is written
        self._window: tuple[int, int] = (0, 0)  # (minute, anonymous refusals written in it)
        self._window_lock = threading.Lock()

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
    ) -> bool:
        """Queue one audit row (texts cut to their columns; the time is now); False when an
        anonymous refusal past this minute's allowance was left out."""
        refusal = actor == "anonymous" and status_code in (401, 404)
        if refusal and not self._anonymous_allowed():
            return False
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
        return True

    def _anonymous_allowed(self) -> bool:
        limit = self.anonymous_per_minute
        if limit is None:
            return True
        minute = int(time.monotonic() // 60)
        with self._window_lock:
            start, written = self._window
            if start != minute:
                start, written = minute, 0
            if written >= limit:
                self._window = (start, written)
                return False
            self._window = (start, written + 1)
            return True
