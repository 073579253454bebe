"""`AuditedRoute`: the admin router's route class, one audit row per call whatever the outcome
(validation errors included): the actor (`token` once `require_admin` accepted the bearer token,
else `anonymous`), the action (the route's name), the target version, the status code and a
message, written to `AuditLog` (spooled; anonymous refusals past AUDIT_ANONYMOUS_PER_MINUTE are
logged and counted, not stored). The row never changes the answer.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Coroutine
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from app.api.deps import ACTOR_ANONYMOUS, ACTOR_TOKEN
from app.errors import ServingError, json_safe
from app.state import ServiceState

logger = logging.getLogger(__name__)


class AuditedRoute(APIRoute):
    """An APIRoute that writes one audit row per call, whatever the outcome."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        action = self.name

        async def audited(request: Request) -> Response:
            try:
                response = await handler(request)
            # HTTPException: raised by the framework itself (a body that does not parse: 400),
            # never by our code; Starlette's class, which FastAPI's own subclasses
            except (ServingError, HTTPException) as error:
                await _audit(
                    request, action=action, status_code=error.status_code, message=str(error.detail)
                )
                raise
            except RequestValidationError as error:
                await _audit(
                    request,
                    action=action,
                    status_code=422,
                    message=f"invalid request: {_first_error(error)}",
                )
                raise
            except Exception:
                await _audit(request, action=action, status_code=500, message="internal error")
                raise
            await _audit(
                request,
                action=action,
                status_code=response.status_code,
                message=getattr(request.state, "audit_message", None),
            )
            return response

        return audited


def _first_error(error: RequestValidationError) -> str:
    errors = error.errors()
    if not errors:
        return "malformed body"
    first = errors[0]
    where = ".".join(str(part) for part in first.get("loc", ()))
    return f"{where}: {first.get('msg', '')}"[:500]


def _printable(text: str | None) -> str | None:
    """Text any database stores: lone surrogates and NUL bytes escaped (Postgres refuses
    both, and a refused audit row would be a lost one)."""
    return None if text is None else json_safe(text).replace("\x00", "\\x00")


async def _audit(request: Request, *, action: str, status_code: int, message: str | None) -> None:
    state: ServiceState | None = getattr(request.app.state, "service", None)
    actor = getattr(request.state, "admin_actor", ACTOR_ANONYMOUS)
    target = _printable(
        getattr(request.state, "audit_target", None) or request.path_params.get("version")
    )
    message = _printable(message)
    allowed = actor == ACTOR_TOKEN and status_code < 400
    client_ip = request.client.host if request.client is not None else None
    logger.info(
        "admin %s target=%s actor=%s status=%d: %s", action, target, actor, status_code, message
    )
    if state is None:
        logger.warning("no database: admin call %s not audited in SQL", action)
        return
    written = state.audit_log.record(
        actor=actor,
        action=action,
        target=target,
        allowed=allowed,
        status_code=status_code,
        message=message,
        client_ip=client_ip,
    )
    if not written:
        state.metrics.admin_audit_sampled.inc()
