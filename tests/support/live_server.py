"""`tanp-serve` as a real subprocess in its own session, for tests and benchmarks that need
uvicorn itself (workers, timeouts, a killed parent): started, waited for, stopped by its pid."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from tests.support.network import free_port

SERVE = [sys.executable, "-m", "app.cli"]
# Settings the environment must not leak into a test server.
UNSET = ("REDIS_URL", "ACTIVE_MODEL", "DATABASE_URL", "MIGRATE_ON_START")


class NotReadyError(RuntimeError):
    """The server exited, or did not answer /readyz with 200 in time."""


def serve_environment(**settings: str) -> dict[str, str]:
    """This process's environment less UNSET, on CPU, quiet, one OpenMP thread, plus `settings`."""
    env = {key: value for key, value in os.environ.items() if key not in UNSET}
    env.update({"DEVICE": "cpu", "LOG_LEVEL": "WARNING", "OMP_NUM_THREADS": "1", **settings})
    return env


def wait_ready(url: str, process: subprocess.Popen[bytes], *, timeout: float) -> float:
    """Poll `url`/readyz until it answers 200; the seconds waited. NotReadyError when the
    process exits or the time runs out."""
    started = time.monotonic()
    while time.monotonic() < started + timeout:
        if process.poll() is not None:
            raise NotReadyError(f"tanp-serve exited with {process.returncode}")
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(f"{url}/readyz", timeout=1).status_code == 200:
                return time.monotonic() - started
        time.sleep(0.1)
    raise NotReadyError(f"tanp-serve not ready within {timeout:g} s")


class LiveServer:
    """`tanp-serve --workers N` in its own process group, its output appended to `log`."""

    def __init__(
        self, *, env: dict[str, str], workers: int, log: Path, port: int | None = None
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log.open("ab")
        self.process = subprocess.Popen(
            [*SERVE, "--port", str(self.port), "--workers", str(workers)],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60) -> float:
        return wait_ready(self.url, self.process, timeout=timeout)

    def workers(self) -> set[int]:
        return children(self.process.pid)

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM to the group, SIGKILL after `timeout`; a group a dead parent left behind
        (its workers) is killed."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        else:
            with contextlib.suppress(ProcessLookupError):  # orphans a test left behind
                os.killpg(self.process.pid, signal.SIGKILL)
        self._log.close()


def children(pid: int) -> set[int]:
    """The pids of `pid`'s children (Linux /proc); empty once it is gone."""
    found: set[int] = set()
    with contextlib.suppress(FileNotFoundError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            found |= {int(child) for child in (task / "children").read_text().split()}
    return found


def alive(pid: int) -> bool:
    """Whether `pid` runs; a zombie has stopped (only its parent may reap it)."""
    try:
        return "\nState:\tZ" not in Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return False
