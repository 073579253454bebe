"""`Annotated[..., Depends()]` aliases for what routes take from the app's `ServiceState`.

Dependencies are `async def` because they only read attributes: FastAPI runs them on the event
loop instead of spending a thread-pool hop on each. `require_admin` guards the admin router.
"""

from __future__ import annotations

import hmac
import re
from typing import Annotated

from fastapi import Depends, Request

from app.api.middleware import request_id_of
from app.errors import ModelUnavailableError, NotFoundError, UnauthorizedError
from app.lifecycle.service import ModelService
from app.serving.model import ServingModel
from app.serving.questions import QuestionAsker
from app.serving.recommender import Recommender
from app.settings import Settings
from app.state import ServiceState

_DIRECTORIES = re.compile(r"(?:/[^\s/:'\"]+)+/")

ACTOR_TOKEN = "token"
ACTOR_ANONYMOUS = "anonymous"


async def get_state(request: Request) -> ServiceState:
    state: ServiceState | None = getattr(request.app.state, "service", None)
    if state is None:  # only before the lifespan ran (or when a server disabled it)
        raise ModelUnavailableError("the service is still starting")
    return state


StateDep = Annotated[ServiceState, Depends(get_state)]


async def get_serving_model(state: StateDep) -> ServingModel:
    """The model this request uses from start to end: `holder.current`, read once."""
    serving = state.holder.current
    if serving is None:
        raise ModelUnavailableError(without_paths(state.models.unavailable_reason()))
    return serving


def without_paths(text: str) -> str:
    """`text` with the directories of absolute paths left out (`/srv/models/v2/x` -> `x`): what
    an anonymous caller may read of a server-side reason."""
    return _DIRECTORIES.sub("", text)


async def get_settings(state: StateDep) -> Settings:
    return state.settings


async def get_model_service(state: StateDep) -> ModelService:
    return state.models


async def get_recommender(state: StateDep) -> Recommender:
    return state.recommender


async def get_question_asker(state: StateDep) -> QuestionAsker:
    return state.questions


async def get_request_id(request: Request) -> str:
    return request_id_of(request.scope)


ServingModelDep = Annotated[ServingModel, Depends(get_serving_model)]
SettingsDep = Annotated[Settings, Depends(get_settings)]
ModelServiceDep = Annotated[ModelService, Depends(get_model_service)]
RecommenderDep = Annotated[Recommender, Depends(get_recommender)]
QuestionAskerDep = Annotated[QuestionAsker, Depends(get_question_asker)]
RequestIdDep = Annotated[str, Depends(get_request_id)]


def holds_admin_token(request: Request, settings: Settings) -> bool:
    """Whether the request carries the admin bearer token (constant-time compare); False when
    admin is off. For routes that show more to an operator than to anyone."""
    token = settings.admin_token
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if not token or scheme.lower() != "bearer" or not credentials.strip():
        return False
    return hmac.compare_digest(credentials.strip().encode(), token.encode())


async def require_admin(request: Request, settings: SettingsDep) -> None:
    """404 when admin is off (no ADMIN_TOKEN); 401 unless the bearer token matches, compared
    in constant time. Marks the request's audit actor."""
    token = settings.admin_token
    if not token:
        raise NotFoundError("Not Found")
    scheme, _, credentials = request.headers.get("authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not credentials.strip():
        raise UnauthorizedError("admin endpoints need Authorization: Bearer <ADMIN_TOKEN>")
    if not hmac.compare_digest(credentials.strip().encode(), token.encode()):
        raise UnauthorizedError("invalid admin token", challenge='Bearer error="invalid_token"')
    request.state.admin_actor = ACTOR_TOKEN
