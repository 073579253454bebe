"""create_app: per-app metrics, CORS and the static mount order."""

from __future__ import annotations

import pytest
from app_helpers import AppFactory, TestClient, state_of


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


@pytest.mark.parametrize(
    ("method", "path", "allowed"),
    [
        ("GET", "/v1/recommend", "POST"),
        ("GET", "/recommend", "POST"),
        ("PUT", "/v1/recommend", "POST"),
        ("POST", "/v1/items", "GET"),
        ("DELETE", "/health", "GET"),
        ("GET", "/admin/models/reload", "POST"),
    ],
)
def test_a_wrong_method_on_an_api_route_is_405_despite_the_page_at_root(
    client: TestClient, method: str, path: str, allowed: str
) -> None:
    """Issue 16 item 8: the static mount at / answered these 404."""
    response = client.request(method, path)
    assert response.status_code == 405
    assert response.headers["allow"] == allowed
    assert response.json() == {"detail": "Method Not Allowed"}


def test_the_page_and_its_files_are_still_served_and_unknown_paths_are_404(
    client: TestClient,
) -> None:
    assert client.get("/").status_code == 200
    assert client.get("/app.js").status_code == 200
    missing = client.get("/no/such/page")
    assert missing.status_code == 404 and missing.json() == {"detail": "Not Found"}


def test_api_docs_off_serves_no_swagger_page_but_the_schema(make_client: AppFactory) -> None:
    """Issue 21 item 10: /docs loads Swagger UI from a CDN on the origin where admins paste
    the token; production (compose, k8s) turns it off."""
    off = make_client(api_docs=False)
    assert off.get("/docs").status_code == 404 and off.get("/redoc").status_code == 404
    assert off.get("/openapi.json").status_code == 200
    assert make_client(api_docs=True).get("/docs").status_code == 200


def test_the_request_log_and_the_audit_share_the_documented_spool_bound(
    make_client: AppFactory,
) -> None:
    """Issue 21 item 10: each log had REQUEST_LOG_SPOOL_BYTES, twice the documented bound."""
    state = state_of(make_client(request_log_spool_bytes=80_000))
    bounds = [state.request_log.spool._max_bytes, state.audit_log.spool._max_bytes]  # type: ignore[attr-defined]
    assert sum(bounds) == 80_000 and all(bounds)
