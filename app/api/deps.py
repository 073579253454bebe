"""`Annotated[..., Depends()]` aliases for what routes take from the app's state.

Dependencies are `async def` because they only read attributes: FastAPI runs them on the event
loop instead of spending a thread-pool hop on each.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

import numpy as np
import torch
from fastapi import Depends, Request

from app.cache import TaskStateCache
from app.errors import ModelUnavailableError
from app.holder import ModelHolder, ServingModel
from app.middleware import request_id_of
from app.request_log import RequestLogSink
from app.settings import Settings
from app.telemetry import Metrics

RETRY_AFTER_SECONDS = 5


async def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


async def get_holder(request: Request) -> ModelHolder:
    holder: ModelHolder = request.app.state.holder
    return holder


async def get_serving_model(request: Request) -> ServingModel:
    """The model this request uses from start to end: `holder.current`, read once."""
    holder: ModelHolder = request.app.state.holder
    serving = holder.current
    if serving is None:
        raise ModelUnavailableError(
            not_ready_reason(request), retry_after_seconds=RETRY_AFTER_SECONDS
        )
    return serving


ServingModelDep = Annotated[ServingModel, Depends(get_serving_model)]


def not_ready_reason(request: Request) -> str:
    holder: ModelHolder = request.app.state.holder
    reason = holder.last_error or getattr(request.app.state, "startup_error", None)
    return f"no model loaded: {reason}" if reason else "no model loaded"


@dataclass(frozen=True)
class CatalogView:
    """Per-version catalog arrays the routes read (built once per served model, not per call)."""

    serving: ServingModel
    names: list[str | None]
    popularity: np.ndarray  # (N,) float64, positive counts among train users
    top_popularity: float
    lowered_names: list[str]
    lowered_ids: list[str]

    @classmethod
    def build(cls, serving: ServingModel) -> CatalogView:
        items = serving.items
        names: list[str | None] = (
            list(serving.loaded.item_names)
            if serving.loaded.item_names is not None
            else [None] * len(items)
        )
        popularity = serving.loaded.model.item_popularity.detach().to("cpu", torch.float64).numpy()
        return cls(
            serving=serving,
            names=names,
            popularity=popularity,
            top_popularity=float(popularity.max()) if popularity.size else 0.0,
            lowered_names=[(name or "").casefold() for name in names],
            lowered_ids=[item.casefold() for item in items],
        )


async def get_catalog_view(request: Request, serving: ServingModelDep) -> CatalogView:
    """The view of the very ServingModel this request uses; rebuilt after a model swap."""
    view: CatalogView | None = getattr(request.app.state, "catalog_view", None)
    if view is None or view.serving is not serving:
        view = CatalogView.build(serving)
        request.app.state.catalog_view = view
    return view


async def get_cache(request: Request) -> TaskStateCache:
    cache: TaskStateCache = request.app.state.cache
    return cache


async def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


async def get_request_log(request: Request) -> RequestLogSink:
    sink: RequestLogSink = request.app.state.request_log
    return sink


async def get_request_id(request: Request) -> str:
    return request_id_of(request.scope)


SettingsDep = Annotated[Settings, Depends(get_settings)]
HolderDep = Annotated[ModelHolder, Depends(get_holder)]
CatalogDep = Annotated[CatalogView, Depends(get_catalog_view)]
CacheDep = Annotated[TaskStateCache, Depends(get_cache)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
RequestLogDep = Annotated[RequestLogSink, Depends(get_request_log)]
RequestIdDep = Annotated[str, Depends(get_request_id)]
