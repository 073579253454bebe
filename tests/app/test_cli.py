"""`tanp-serve` end to end: the real uvicorn process (factory mode) serves the tiny model."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from app.cli import main


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_help_exits_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--workers" in capsys.readouterr().out


@pytest.mark.slow
def test_tanp_serve_answers_on_loopback(models_dir: Path, tmp_path: Path) -> None:
    port = free_port()
    environment = dict(os.environ)
    environment.pop("REDIS_URL", None)
    environment.pop("ACTIVE_MODEL", None)
    environment.update(
        {
            "MODELS_DIR": str(models_dir),
            "DATABASE_URL": f"sqlite:///{tmp_path / 'serve.db'}",
            "MIGRATE_ON_START": "1",
            "LOG_LEVEL": "WARNING",
        }
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "--port", str(port)],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert server.poll() is None, server.stderr.read().decode() if server.stderr else ""
            try:
                if httpx.get(f"{base}/readyz", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "server not ready within 60 s"
            time.sleep(0.2)
        response = httpx.post(
            f"{base}/v1/recommend",
            json={"support": [{"item_id": "a1", "rating": 1}], "k": 3},
            timeout=10,
        )
        assert response.status_code == 200
        assert len(response.json()["items"]) == 3
        assert response.headers["X-Request-ID"] == response.json()["request_id"]
    finally:
        server.terminate()
        server.wait(timeout=30)
        if server.stderr is not None:
            server.stderr.close()
