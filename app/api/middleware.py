"""Pure ASGI middleware: request id, request-body size limit and request metrics.

Runs outside FastAPI's routing so that every response, errors and 413s included, carries
`X-Request-ID` and is counted. The body limit counts the bytes actually received (chunked
bodies too), not only what Content-Length claims. Knows nothing about the model.
"""

from __future__ import annotations

import json
import logging
import re
import time
import uuid

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from app.telemetry import Metrics

logger = logging.getLogger(__name__)

REQUEST_ID_HEADER = "X-Request-ID"
REQUEST_ID_SCOPE_KEY = "tanp.request_id"
_SANE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:-]{1,64}$")  # 64: the request_log column
_UNMATCHED_ROUTE = "unmatched"


def new_request_id(incoming: str | None) -> str:
    """Echo a client's id when it is short and plain, else a fresh uuid4 hex."""
    if incoming is not None and _SANE_REQUEST_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


def request_id_of(scope: Scope) -> str:
    """The id the middleware gave this request (a fresh one if it never ran, e.g. in a unit)."""
    value = scope.get(REQUEST_ID_SCOPE_KEY)
    return value if isinstance(value, str) else uuid.uuid4().hex


class ServiceMiddleware:
    """Request id on every response, body limit on every request, metrics for both."""

    def __init__(self, app: ASGIApp, *, max_body_bytes: int, metrics: Metrics) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        incoming = None
        for name, value in scope.get("headers", []):
            if name == b"x-request-id":
                incoming = value.decode("latin-1")
                break
        request_id = new_request_id(incoming)
        scope[REQUEST_ID_SCOPE_KEY] = request_id
        status_code = 500
        response_started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status_code, response_started
            if message["type"] == "http.response.start":
                response_started = True
                status_code = int(message["status"])
                headers = MutableHeaders(scope=message)
                headers[REQUEST_ID_HEADER] = request_id
            await send(message)

        try:
            body = await self._read_body(scope, receive)
            if body is None:
                await _send_json(
                    send_with_id,
                    status=413,
                    detail=f"request body exceeds {self.max_body_bytes} bytes",
                )
                return
            await self.app(scope, _replay(body, receive), send_with_id)
        except _ClientDisconnected:
            status_code = 499  # nginx's "client closed request"; nothing is sent
        except Exception:
            if not response_started:
                logger.exception("unhandled error in request %s", request_id)
                await _send_json(send_with_id, status=500, detail="internal server error")
                return
            raise
        finally:
            route = scope.get("route")
            template = getattr(route, "path", None) or _UNMATCHED_ROUTE
            self.metrics.requests.labels(
                route=template, method=scope["method"], status=str(status_code)
            ).inc()
            self.metrics.request_latency.labels(route=template).observe(
                time.perf_counter() - started
            )

    async def _read_body(self, scope: Scope, receive: Receive) -> bytes | None:
        """The whole body, or None as soon as it is known to be over the limit."""
        for name, value in scope.get("headers", []):
            if name == b"content-length":
                try:
                    if int(value) > self.max_body_bytes:
                        return None
                except ValueError:
                    pass
                break
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                # The client went away; let the app see the disconnect.
                raise _ClientDisconnected
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                return b"".join(chunks)


class _ClientDisconnected(Exception):
    """The client disconnected before its body arrived."""


def _replay(body: bytes, receive: Receive) -> Receive:
    """A receive that yields the buffered body once, then defers to the server's receive."""
    delivered = False

    async def replay() -> Message:
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay


async def _send_json(send: Send, *, status: int, detail: str) -> None:
    payload = json.dumps({"detail": detail}).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode("ascii")),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
