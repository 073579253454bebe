"""create_app: startup version choice, per-app metrics, CORS and the static mount order."""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

from app_helpers import AppFactory, TestClient

from app.main import choose_startup_version
from app.settings import Settings


def test_startup_version_prefers_active_model(models_dir: Path, tmp_path: Path) -> None:
    for name in ("old", "new"):
        shutil.copytree(models_dir / "v1", tmp_path / name)
    past = time.time() - 100
    os.utime(tmp_path / "old" / "manifest.json", (past, past))
    assert choose_startup_version(Settings(models_dir=tmp_path, active_model=None)) == "new"
    assert choose_startup_version(Settings(models_dir=tmp_path, active_model="old")) == "old"
    assert choose_startup_version(Settings(models_dir=tmp_path / "none", active_model=None)) is None


def test_apps_have_separate_metrics(make_client: AppFactory) -> None:
    first = make_client()
    second = make_client()
    first.get("/livez")
    first.get("/livez")
    assert 'route="/livez",status="200"} 2.0' in first.get("/metrics").text
    assert 'route="/livez"' not in second.get("/metrics").text


def test_cors_only_when_configured(make_client: AppFactory, client: TestClient) -> None:
    origin = {"Origin": "http://ui.example"}
    with_cors = make_client(cors_origins=["http://ui.example"])
    allowed = with_cors.get("/livez", headers=origin)
    assert allowed.headers["access-control-allow-origin"] == "http://ui.example"
    assert "access-control-allow-origin" not in client.get("/livez", headers=origin).headers


def test_api_routes_win_over_static_mount(client: TestClient) -> None:
    # Whether or not app/static exists, API paths answer from the API.
    assert client.get("/livez").json() == {"status": "ok"}
    assert client.get("/openapi.json").status_code == 200
