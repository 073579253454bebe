"""create_app: per-app metrics, CORS and the static mount order."""

from __future__ import annotations

from app_helpers import AppFactory, TestClient


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
