"""Bounded waits: poll a condition until it holds, so a broken build fails instead of hanging
and no test asserts on timing."""

from __future__ import annotations

import time
from collections.abc import Callable


def wait_for(condition: Callable[[], bool], *, timeout: float, interval: float = 0.05) -> bool:
    """Poll `condition()` every `interval` seconds until it holds (True) or `timeout` (False)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(interval)
    return True
