"""`tanp-serve` end to end: the real uvicorn process (factory mode) serves the tiny model."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from app.cli import main
from tests.support.live_server import LiveServer, serve_environment


def test_help_exits_cleanly(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "--workers" in capsys.readouterr().out


@pytest.mark.slow
def test_tanp_serve_answers_on_loopback(models_dir: Path, tmp_path: Path) -> None:
    environment = serve_environment(
        MODELS_DIR=str(models_dir),
        DATABASE_URL=f"sqlite:///{tmp_path / 'serve.db'}",
        MIGRATE_ON_START="1",
    )
    server = LiveServer(env=environment, workers=1, log=tmp_path / "serve.log")
    try:
        server.wait_ready()
        response = httpx.post(
            f"{server.url}/v1/recommend",
            json={"support": [{"item_id": "a1", "rating": 1}], "k": 3},
            timeout=10,
        )
        assert response.status_code == 200
        assert len(response.json()["items"]) == 3
        assert response.headers["X-Request-ID"] == response.json()["request_id"]
    finally:
        server.stop()
