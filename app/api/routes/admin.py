"""Admin API: list model versions, reload or activate one (SPEC section 6).

Off (404) when no ADMIN_TOKEN is configured, else `Authorization: Bearer <token>` (`require_admin`);
every call leaves an audit row (`AuditedRoute`). Versions are names of run directories under
MODELS_DIR; the work is `ModelService`'s, whose `ServingError`s are the answers on refusal.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Request

from app.api.audit import AuditedRoute
from app.api.deps import ModelServiceDep, require_admin
from app.lifecycle.service import ModelService
from app.schemas import ActivateResponse, ModelsResponse, ReloadRequest

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
_ACTIVATE_RESPONSES: dict[int | str, dict[str, Any]] = {
    400: {
        "description": "Not a version name (a path, a URL, or leaving MODELS_DIR), or a body "
        "that cannot be read as JSON text."
    },
    422: {"description": "The checkpoint was refused; the previous model keeps serving."},
    503: {
        "description": "The model registry (SQL) could not record the activation: nothing "
        "was changed; retry after `Retry-After` seconds."
    },
}


@router.get("/models", response_model=ModelsResponse)
def list_models(request: Request, models: ModelServiceDep) -> ModelsResponse:
    """Versions on disk and in the registry, which one this worker serves, every worker's."""
    overview = models.overview()
    request.state.audit_message = f"{len(overview.versions)} versions"
    return ModelsResponse.model_validate(overview)


@router.post("/models/reload", response_model=ActivateResponse, responses=_ACTIVATE_RESPONSES)
def reload_model(
    request: Request, body: ReloadRequest, models: ModelServiceDep
) -> ActivateResponse:
    """Load a version (or the newest with `latest`) beside the current one, then swap."""
    version = models.newest_version() if body.version is None else body.version
    return _activate(request, models, version)


@router.post(
    "/models/{version}/activate", response_model=ActivateResponse, responses=_ACTIVATE_RESPONSES
)
def activate_model(request: Request, version: str, models: ModelServiceDep) -> ActivateResponse:
    """Make `version` the active one in every worker (load here, record, broadcast)."""
    return _activate(request, models, version)


def _activate(request: Request, models: ModelService, version: str) -> ActivateResponse:
    request.state.audit_target = version
    activation = models.activate(version)
    request.state.audit_message = f"activated {activation.version} (was {activation.previous})"
    return ActivateResponse.model_validate(activation)
