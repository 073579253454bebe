"""Probes and metrics: `/livez`, `/readyz`, `/health`, `/metrics`.

`/livez` says the process answers; `/readyz` says a verified model is loaded (build_model has
checked its sha256 and its manifest probe); `/health` reports the parts for humans. Anonymous
callers get no absolute paths, pids, worker names or database errors: those need the admin
bearer token.
"""

from __future__ import annotations

import os

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app.api.deps import StateDep, holds_admin_token, without_paths
from app.schemas import HealthResponse, WorkerStatus
from app.telemetry import METRICS_CONTENT_TYPE

router = APIRouter(tags=["health"])


@router.get("/livez")
async def livez() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "No verified model loaded."}})
async def readyz(request: Request, state: StateDep) -> JSONResponse:
    serving = state.holder.current
    if serving is None:
        reason = state.models.unavailable_reason()
        if not holds_admin_token(request, state.settings):
            reason = without_paths(reason)
        return JSONResponse(status_code=503, content={"detail": reason})
    return JSONResponse(content={"status": "ready", "model_version": serving.version})


@router.get("/health", response_model=HealthResponse)
def health(request: Request, state: StateDep) -> HealthResponse:
    """A plain `def`: pinging Redis and the database blocks (each for at most its timeout).
    The pid, the workers and the database's error need the admin bearer token."""
    serving = state.holder.current
    redis_status = state.cache.status()
    db_status = state.database.status()
    healthy = serving is not None and redis_status != "down" and db_status == "ok"
    operator = holds_admin_token(request, state.settings)
    return HealthResponse(
        status="ok" if healthy else "degraded",
        model_version=serving.version if serving is not None else None,
        device=serving.device if serving is not None else None,
        pid=os.getpid() if operator else None,
        db=db_status if operator or db_status == "ok" else "down",
        redis=redis_status,  # type: ignore[arg-type]
        cache=state.cache.kind,
        workers=(
            [WorkerStatus.model_validate(entry) for entry in state.models.workers()]
            if operator
            else []
        ),
    )


@router.get("/metrics", response_class=Response)
async def metrics(state: StateDep) -> Response:
    """Prometheus text; the model gauge is refreshed here so it follows reloads."""
    serving = state.holder.current
    collectors = state.metrics
    collectors.set_model(
        serving.version if serving is not None else None,
        serving.device if serving is not None else None,
    )
    return Response(content=collectors.render(), media_type=METRICS_CONTENT_TYPE)
