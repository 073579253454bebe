"""/livez, /readyz, /health and /metrics, with a model, without one and with a broken one."""

from __future__ import annotations

import shutil
from pathlib import Path

from app_helpers import AppFactory, TestClient


def test_ready_app(client: TestClient) -> None:
    assert client.get("/livez").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["model_version"] == "v1"
    health = client.get("/health").json()
    assert health["status"] == "ok"
    assert (health["model_version"], health["device"]) == ("v1", "cpu")
    assert (health["db"], health["redis"], health["cache"]) == ("ok", "disabled", "memory")
    assert health["pid"] is None and health["workers"] == []  # an operator's details


def test_anonymous_callers_get_no_paths_pids_or_database_errors(
    make_client: AppFactory, tmp_path: Path
) -> None:
    """Issue 21 item 10: /readyz and /health gave anyone absolute paths, pids and DB errors."""
    models = tmp_path / "empty-models"
    models.mkdir()
    client = make_client(
        models_dir=models,
        admin_token="t",
        database_url=f"sqlite:///{tmp_path / 'no-such-dir' / 'x.db'}",
        migrate_on_start=False,
    )
    anonymous = client.get("/readyz").json()["detail"]
    assert "no run directory under MODELS_DIR" in anonymous and str(tmp_path) not in anonymous
    recommend = client.post("/v1/recommend", json={"support": []}).json()["detail"]
    assert str(tmp_path) not in recommend
    health = client.get("/health").json()
    assert (health["pid"], health["workers"], health["db"]) == (None, [], "down")
    operator = {"Authorization": "Bearer t"}
    assert str(models) in client.get("/readyz", headers=operator).json()["detail"]
    detailed = client.get("/health", headers=operator).json()
    assert detailed["pid"] > 0 and len(detailed["workers"]) == 1
    assert detailed["db"].startswith("down: ")


def test_metrics_expose_model_info_and_tanp_names(client: TestClient) -> None:
    client.post("/v1/recommend", json={"support": [{"item_id": "a1", "rating": 1}]})
    response = client.get("/metrics")
    assert response.headers["content-type"].startswith("text/plain")
    text = response.text
    assert 'tanp_model_info{device="cpu",version="v1"} 1.0' in text
    assert 'tanp_inference_latency_seconds_count{path="model"} 1.0' in text
    names = {line.split()[2] for line in text.splitlines() if line.startswith("# TYPE")}
    assert names and all(name.startswith("tanp_") for name in names)


def test_no_model_starts_but_is_not_ready(make_client: AppFactory, tmp_path: Path) -> None:
    client = make_client(models_dir=tmp_path)
    assert client.get("/livez").status_code == 200
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert "no run directory under MODELS_DIR" in ready.json()["detail"]
    assert client.get("/health").json()["status"] == "degraded"
    assert "tanp_model_info{" not in client.get("/metrics").text


def test_corrupt_model_starts_but_is_not_ready(
    make_client: AppFactory, models_dir: Path, tmp_path: Path
) -> None:
    shutil.copytree(models_dir / "v1", tmp_path / "v2")
    with (tmp_path / "v2" / "model.safetensors").open("r+b") as weights:
        weights.seek(-4, 2)
        weights.write(b"\x00\x01\x02\x03")
    client = make_client(models_dir=tmp_path)
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert "sha256" in ready.json()["detail"]
    response = client.post("/v1/recommend", json={"support": []})
    assert response.status_code == 503
    assert "sha256" in response.json()["detail"]


def test_unknown_active_model_is_not_ready(make_client: AppFactory) -> None:
    client = make_client(active_model="v9")
    ready = client.get("/readyz")
    assert ready.status_code == 503
    assert "v9" in ready.json()["detail"]
