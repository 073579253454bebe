"""Request ids on every response, the streamed body limit (413) and per-route request metrics."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Iterator
from typing import Any

import pytest
from app_helpers import AppFactory, TestClient
from starlette.types import Message, Receive, Scope, Send

from app.api.middleware import ServiceMiddleware, new_request_id
from app.telemetry import Metrics

LIMIT = 2048


@pytest.fixture
def small_limit_client(make_client: AppFactory) -> TestClient:
    return make_client(max_body_bytes=LIMIT)


def big_body(size: int) -> bytes:
    support = [{"item_id": "a1", "rating": 1}]
    padding = " " * max(0, size - len(json.dumps({"support": support})))
    return (json.dumps({"support": support})[:-1] + padding + "}").encode()


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", "/livez"),
        ("GET", "/readyz"),
        ("GET", "/health"),
        ("GET", "/metrics"),
        ("GET", "/v1/items"),
        ("GET", "/v1/items/nope"),
        ("GET", "/no/such/route"),
        ("POST", "/v1/recommend"),
    ],
)
def test_every_response_has_a_request_id(client: TestClient, method: str, path: str) -> None:
    response = client.request(method, path, json={} if method == "POST" else None)
    assert len(response.headers["X-Request-ID"]) == 32


def test_sane_incoming_request_id_is_echoed(client: TestClient) -> None:
    response = client.post(
        "/v1/recommend", json={"support": []}, headers={"X-Request-ID": "abc-123.x"}
    )
    assert response.headers["X-Request-ID"] == "abc-123.x"
    assert response.json()["request_id"] == "abc-123.x"


@pytest.mark.parametrize("incoming", ["", "a" * 65, "a" * 129, "has space", "new\u00e9line", "x;y"])
def test_insane_incoming_request_id_is_replaced(incoming: str) -> None:
    replaced = new_request_id(incoming)
    assert replaced != incoming
    assert len(replaced) == 32


def test_413_with_content_length(small_limit_client: TestClient) -> None:
    response = small_limit_client.post(
        "/v1/recommend", content=big_body(LIMIT + 1), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 413
    assert str(LIMIT) in response.json()["detail"]
    assert response.headers["X-Request-ID"]


def test_413_for_chunked_body_without_content_length(small_limit_client: TestClient) -> None:
    body = big_body(LIMIT * 3)

    def chunks() -> Iterator[bytes]:
        for start in range(0, len(body), 500):
            yield body[start : start + 500]

    response = small_limit_client.post(
        "/v1/recommend", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert "content-length" not in response.request.headers
    assert response.status_code == 413


def test_chunked_body_under_the_limit_is_served(small_limit_client: TestClient) -> None:
    body = big_body(LIMIT - 10)

    def chunks() -> Iterator[bytes]:
        yield body[:100]
        yield body[100:]

    response = small_limit_client.post(
        "/v1/recommend", content=chunks(), headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 200
    assert response.json()["items"]


def test_body_larger_than_its_content_length_claims_is_413() -> None:
    """A lying Content-Length does not help: the received bytes are counted."""
    reached_app: list[bool] = []

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        reached_app.append(True)

    middleware = ServiceMiddleware(app, max_body_bytes=1024, metrics=Metrics())
    incoming: list[Message] = [
        {"type": "http.request", "body": b"x" * 600, "more_body": True},
        {"type": "http.request", "body": b"x" * 600, "more_body": False},
    ]
    sent: list[Message] = []

    async def receive() -> Message:
        return incoming.pop(0)

    async def send(message: Message) -> None:
        sent.append(message)

    scope: dict[str, Any] = {
        "type": "http",
        "method": "POST",
        "path": "/v1/recommend",
        "headers": [(b"content-length", b"10")],
    }
    asyncio.run(middleware(scope, receive, send))
    assert not reached_app
    assert sent[0]["status"] == 413
    assert dict(sent[0]["headers"])[b"x-request-id"]


def test_unhandled_error_is_a_500_with_request_id() -> None:
    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        raise RuntimeError("boom")

    metrics = Metrics()
    middleware = ServiceMiddleware(app, max_body_bytes=1024, metrics=metrics)
    sent: list[Message] = []

    async def receive() -> Message:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Message) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": "/x", "headers": []}
    asyncio.run(middleware(scope, receive, send))
    assert sent[0]["status"] == 500
    assert json.loads(sent[1]["body"]) == {"detail": "internal server error"}
    assert dict(sent[0]["headers"])[b"x-request-id"]
    assert 'status="500"' in metrics.render().decode()


def test_requests_are_counted_by_route_template(client: TestClient) -> None:
    client.get("/v1/items/a1")
    client.get("/v1/items/a2")
    client.get("/v1/items/zzz")
    text = client.get("/metrics").text
    assert 'tanp_requests_total{method="GET",route="/v1/items/{item_id}",status="200"} 2.0' in text
    assert 'tanp_requests_total{method="GET",route="/v1/items/{item_id}",status="404"} 1.0' in text
    assert 'tanp_request_latency_seconds_count{route="/v1/items/{item_id}"} 3.0' in text
