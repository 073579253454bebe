"""`tanp-serve` as a real subprocess for the tests that need uvicorn itself (reloads across
workers, timeouts, a killed parent): started in its own session, stopped by its pid."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

SERVE = [sys.executable, "-c", "import sys; from app.cli import main; sys.exit(main())"]
# Settings the environment must not leak into a test server.
UNSET = ("REDIS_URL", "ACTIVE_MODEL", "DATABASE_URL", "MIGRATE_ON_START")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def serve_environment(**settings: str) -> dict[str, str]:
    env = {key: value for key, value in os.environ.items() if key not in UNSET}
    env.update({"DEVICE": "cpu", "LOG_LEVEL": "WARNING", "OMP_NUM_THREADS": "1", **settings})
    return env


class Server:
    """`tanp-serve` in its own process group; `stop` ends it (and its workers) by its pid."""

    def __init__(
        self, *, env: dict[str, str], workers: int, log: Path, port: int | None = None
    ) -> None:
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._log = log.open("wb")
        self.process = subprocess.Popen(
            [*SERVE, "--port", str(self.port), "--workers", str(workers)],
            env=env,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float = 60) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"tanp-serve exited with {self.process.returncode}")
            try:
                if httpx.get(f"{self.url}/readyz", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("tanp-serve did not become ready")

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(5)
        else:
            with contextlib.suppress(ProcessLookupError):  # orphans a test left behind
                os.killpg(self.process.pid, signal.SIGKILL)
        self._log.close()
