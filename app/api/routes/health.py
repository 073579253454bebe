"""Probes and metrics: `/livez`, `/readyz`, `/health`, `/metrics`.

`/livez` says the process answers; `/readyz` says a verified model is loaded (build_model has
checked its sha256 and its manifest probe); `/health` reports the parts for humans.
"""

from __future__ import annotations

import os

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from app.api.deps import CacheDep, HolderDep, MetricsDep, not_ready_reason
from app.broadcast import ModelSync
from app.db import database_status
from app.schemas import HealthResponse, WorkerStatus
from app.telemetry import METRICS_CONTENT_TYPE

router = APIRouter(tags=["health"])


@router.get("/livez")
async def livez() -> dict[str, str]:
    return {"status": "ok"}


@router.get("/readyz", responses={503: {"description": "No verified model loaded."}})
async def readyz(request: Request, holder: HolderDep) -> JSONResponse:
    serving = holder.current
    if serving is None:
        return JSONResponse(status_code=503, content={"detail": not_ready_reason(request)})
    return JSONResponse(content={"status": "ready", "model_version": serving.version})


@router.get("/health", response_model=HealthResponse)
def health(request: Request, holder: HolderDep, cache: CacheDep) -> HealthResponse:
    """A plain `def`: pinging Redis and the database blocks (each for at most its timeout)."""
    serving = holder.current
    redis_status = cache.status()
    engine = getattr(request.app.state, "db_engine", None)
    db_status: str = (
        database_status(engine)
        if engine is not None
        else getattr(request.app.state, "db_status", "unknown")
    )
    sync: ModelSync | None = getattr(request.app.state, "model_sync", None)
    workers = [WorkerStatus.model_validate(entry) for entry in sync.workers()] if sync else []
    healthy = serving is not None and redis_status != "down" and db_status == "ok"
    return HealthResponse(
        status="ok" if healthy else "degraded",
        model_version=serving.version if serving is not None else None,
        device=str(serving.loaded.device) if serving is not None else None,
        pid=os.getpid(),
        db=db_status,
        redis=redis_status,  # type: ignore[arg-type]
        cache=cache.kind,
        workers=workers,
    )


@router.get("/metrics", response_class=Response)
async def metrics(holder: HolderDep, collectors: MetricsDep) -> Response:
    """Prometheus text; the model gauge is refreshed here so it follows reloads."""
    serving = holder.current
    collectors.set_model(
        serving.version if serving is not None else None,
        str(serving.loaded.device) if serving is not None else None,
    )
    return Response(content=collectors.render(), media_type=METRICS_CONTENT_TYPE)
