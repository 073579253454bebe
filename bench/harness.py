"""What the benchmarks that start a real `tanp-serve` share: waiting for it to be ready."""

from __future__ import annotations

import subprocess
import time

import httpx


def wait_ready(base: str, server: subprocess.Popen[bytes], timeout: float = 120.0) -> None:
    """Poll `base`/readyz until it answers 200; exit if the server dies or the time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"server exited with {server.returncode}")
        try:
            if httpx.get(f"{base}/readyz", timeout=1.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("server not ready in time")
