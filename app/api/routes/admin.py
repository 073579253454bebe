"""Admin API: list model versions, reload or activate one (SPEC section 6).

Off (404) when no ADMIN_TOKEN is configured; otherwise `Authorization: Bearer <token>`, compared
in constant time, else 401 with `WWW-Authenticate: Bearer`. Every call, allowed or refused
(validation errors included), leaves an audit row; writing it is best effort and never changes
the answer. Versions are names of run directories under MODELS_DIR, never paths or URLs. A
refused checkpoint leaves the current model serving.
"""

from __future__ import annotations

import hmac
import logging
from collections.abc import Callable, Coroutine
from datetime import datetime
from pathlib import Path
from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from pydantic import BaseModel, ConfigDict, Field, model_validator
from starlette.concurrency import run_in_threadpool

from app.api.deps import HolderDep, SettingsDep
from app.broadcast import ModelSync
from app.holder import VERSION_PATTERN, ModelHolder, ServingModel, VersionError, list_versions
from app.holder import resolve_version as resolve_run_dir
from app.registry import SessionFactory, list_registered, mark_active, mark_failed, write_audit
from tanp.checkpoint import CheckpointError

logger = logging.getLogger(__name__)

ACTOR_TOKEN = "token"
ACTOR_ANONYMOUS = "anonymous"


class ReloadRequest(BaseModel):
    """Exactly one of `version` (a run directory name under MODELS_DIR) or `latest: true`."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={"examples": [{"version": "lastfm-2025-11-29"}, {"latest": True}]},
    )

    version: str | None = Field(default=None, max_length=256)
    latest: bool = False

    @model_validator(mode="after")
    def _one_target(self) -> ReloadRequest:
        if (self.version is None) == (not self.latest):
            raise ValueError('give exactly one of {"version": "..."} or {"latest": true}')
        return self


class VersionInfo(BaseModel):
    name: str
    status: str
    serving: bool
    on_disk: bool
    sha256: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    message: str | None = None
    created_at: datetime | None = None
    activated_at: datetime | None = None


class ModelsResponse(BaseModel):
    serving: str | None
    registry: str = Field(description="'ok', or why the SQL registry could not be read")
    versions: list[VersionInfo]
    workers: list[dict[str, Any]]


class ActivateResponse(BaseModel):
    version: str
    previous: str | None
    device: str


async def require_admin(request: Request, settings: SettingsDep) -> None:
    """404 when admin is off; 401 unless the bearer token matches ADMIN_TOKEN."""
    token = settings.admin_token
    if not token:
        raise HTTPException(status_code=404, detail="Not Found")
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise HTTPException(
            status_code=401,
            detail="admin endpoints need Authorization: Bearer <ADMIN_TOKEN>",
            headers={"WWW-Authenticate": "Bearer"},
        )
    if not hmac.compare_digest(credentials.strip().encode(), token.encode()):
        raise HTTPException(
            status_code=401,
            detail="invalid admin token",
            headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
        )
    request.state.admin_actor = ACTOR_TOKEN


class AuditedRoute(APIRoute):
    """An APIRoute that writes one audit row per call, whatever the outcome."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        action = self.name

        async def audited(request: Request) -> Response:
            try:
                response = await handler(request)
            except HTTPException as error:
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


async def _audit(request: Request, *, action: str, status_code: int, message: str | None) -> None:
    session_factory: SessionFactory | None = getattr(request.app.state, "session_factory", None)
    actor = getattr(request.state, "admin_actor", ACTOR_ANONYMOUS)
    target = getattr(request.state, "audit_target", None) or request.path_params.get("version")
    allowed = actor == ACTOR_TOKEN and status_code < 400
    client_ip = request.client.host if request.client is not None else None
    logger.info(
        "admin %s target=%s actor=%s status=%d: %s", action, target, actor, status_code, message
    )
    if session_factory is None:
        logger.warning("no database: admin call %s not audited in SQL", action)
        return
    try:
        await run_in_threadpool(
            write_audit,
            session_factory,
            actor=actor,
            action=action,
            target=target,
            allowed=allowed,
            status_code=status_code,
            message=message,
            client_ip=client_ip,
        )
    except Exception as error:  # the audit is best effort: the answer stands
        logger.error("could not write admin audit row for %s: %s", action, error)


router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    route_class=AuditedRoute,
    dependencies=[Depends(require_admin)],
    responses={
        401: {"description": "Missing or wrong bearer token."},
        404: {"description": "Admin is off (no ADMIN_TOKEN) or no such version."},
    },
)


@router.get("/models", response_model=ModelsResponse)
def list_models(request: Request, settings: SettingsDep, holder: HolderDep) -> ModelsResponse:
    """Versions on disk and in the registry, which one this worker serves, every worker's."""
    current = holder.current
    serving_name = current.version if current is not None else None
    on_disk = list_versions(settings.models_dir)
    session_factory: SessionFactory | None = getattr(request.app.state, "session_factory", None)
    registry_status = "ok"
    infos: dict[str, VersionInfo] = {}
    if session_factory is None:
        registry_status = "disabled"
    else:
        try:
            for record in list_registered(session_factory):
                infos[record.name] = VersionInfo(
                    name=record.name,
                    status=record.status,
                    serving=record.name == serving_name,
                    on_disk=record.name in on_disk,
                    sha256=record.sha256,
                    metrics=record.metrics,
                    message=record.message,
                    created_at=record.created_at,
                    activated_at=record.activated_at,
                )
        except Exception as error:  # the registry is optional: list what is on disk
            registry_status = f"unavailable: {str(error).splitlines()[0][:200]}"
    for name in on_disk:
        if name not in infos:
            infos[name] = VersionInfo(
                name=name, status="unregistered", serving=name == serving_name, on_disk=True
            )
    sync: ModelSync | None = getattr(request.app.state, "model_sync", None)
    workers = sync.workers() if sync is not None else []
    request.state.audit_message = f"{len(infos)} versions"
    return ModelsResponse(
        serving=serving_name,
        registry=registry_status,
        versions=list(infos.values()),
        workers=workers,
    )


_ACTIVATE_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {"description": "Not a version name (a path, a URL, or leaving MODELS_DIR)."},
    422: {"description": "The checkpoint was refused; the previous model keeps serving."},
}


@router.post(
    "/models/reload",
    response_model=ActivateResponse,
    responses=_ACTIVATE_RESPONSES,
)
def reload_model(
    request: Request, body: ReloadRequest, settings: SettingsDep, holder: HolderDep
) -> ActivateResponse:
    """Load a version (or the newest with `latest`) beside the current one, then swap."""
    if body.latest:
        versions = list_versions(settings.models_dir)
        if not versions:
            raise HTTPException(status_code=404, detail="no run directory under MODELS_DIR")
        version = versions[-1]
    else:
        assert body.version is not None
        version = body.version
    request.state.audit_target = version
    return _activate(request, holder=holder, models_dir=settings.models_dir, version=version)


@router.post(
    "/models/{version}/activate",
    response_model=ActivateResponse,
    responses=_ACTIVATE_RESPONSES,
)
def activate_model(
    request: Request, version: str, settings: SettingsDep, holder: HolderDep
) -> ActivateResponse:
    """Make `version` the active one in every worker (load here, record, broadcast)."""
    request.state.audit_target = version
    return _activate(request, holder=holder, models_dir=settings.models_dir, version=version)


def check_version_name(models_dir: Path, version: str) -> None:
    """Raise 400 for anything but a run directory name inside MODELS_DIR, 404 when absent."""
    if "://" in version:
        raise HTTPException(
            status_code=400, detail=f"{version!r} is a URL; give a version name under MODELS_DIR"
        )
    if not VERSION_PATTERN.fullmatch(version) or version in (".", ".."):
        raise HTTPException(
            status_code=400,
            detail=(
                f"{version!r} is not a version name: use the name of a run directory under "
                "MODELS_DIR (letters, digits, '.', '_', '-'), never a path"
            ),
        )
    try:
        resolve_run_dir(models_dir, version)
    except VersionError as error:
        candidate = models_dir / version
        exists = candidate.is_symlink() or candidate.exists()
        raise HTTPException(status_code=400 if exists else 404, detail=str(error)) from error


def _activate(
    request: Request, *, holder: ModelHolder, models_dir: Path, version: str
) -> ActivateResponse:
    check_version_name(models_dir, version)
    previous = holder.current
    previous_name = previous.version if previous is not None else None
    sync: ModelSync | None = getattr(request.app.state, "model_sync", None)
    session_factory: SessionFactory | None = getattr(request.app.state, "session_factory", None)
    try:
        serving = (
            sync.activate(version)
            if sync is not None
            else _load_and_record(holder, session_factory, version)
        )
    except CheckpointError as error:
        if session_factory is not None and version != previous_name:
            try:
                mark_failed(
                    session_factory, name=version, path=models_dir / version, message=str(error)
                )
            except Exception as db_error:
                logger.warning("could not record failed version %s: %s", version, db_error)
        raise HTTPException(
            status_code=422,
            detail=f"version {version!r} refused, still serving {previous_name!r}: {error}",
        ) from error
    except VersionError as error:
        raise HTTPException(status_code=404, detail=str(error)) from error
    request.state.audit_message = f"activated {serving.version} (was {previous_name})"
    return ActivateResponse(
        version=serving.version, previous=previous_name, device=str(serving.loaded.device)
    )


def _load_and_record(
    holder: ModelHolder, session_factory: SessionFactory | None, version: str
) -> ServingModel:
    serving = holder.load(version)
    if session_factory is not None:
        try:
            mark_active(session_factory, serving)
        except Exception as error:
            logger.warning("could not record %s as active: %s", version, error)
    return serving
