"""`POST /v1/recommend` (and its alias `POST /recommend`): support set -> top-k items.

A plain `def` route: torch blocks, so FastAPI runs it in the thread pool. The request uses the
one `ServingModel` its dependency read, even if a reload swaps the holder meanwhile. Scoring
goes only through `tanp.scoring` (the same code offline evaluation uses).
"""

from __future__ import annotations

import logging
import time
from typing import Annotated, Any

import numpy as np
import torch
from fastapi import APIRouter, Body

from app.api.deps import (
    CacheDep,
    CatalogDep,
    CatalogView,
    MetricsDep,
    RequestIdDep,
    RequestLogDep,
    ServingModelDep,
    SettingsDep,
)
from app.cache import TaskStateCache, cache_key, support_digest
from app.errors import InvalidRequestError, RatingRangeError, UnknownItemsError, name_ids
from app.holder import ServingModel
from app.request_log import RequestLogEntry, RequestLogSink
from app.schemas import (
    RECOMMEND_REQUEST_EXAMPLE,
    RECOMMEND_RESPONSE_EXAMPLE,
    RecommendedItem,
    RecommendRequest,
    RecommendResponse,
)
from app.telemetry import Metrics
from tanp.model import TaskState
from tanp.scoring import pack_state, rank, unpack_state

logger = logging.getLogger(__name__)

router = APIRouter(tags=["recommend"])

_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {"example": RECOMMEND_RESPONSE_EXAMPLE}}},
    413: {"description": "Request body over MAX_BODY_BYTES."},
    422: {"description": "Unknown item ids (named), duplicates, out-of-range values."},
    503: {"description": "No model loaded yet; retry after `Retry-After` seconds."},
}
RecommendBody = Annotated[
    RecommendRequest,
    Body(
        openapi_examples={
            "three rated artists": {"value": RECOMMEND_REQUEST_EXAMPLE},
            "brand-new user": {
                "summary": "empty support: popularity fallback",
                "value": {"support": [], "k": 5},
            },
        }
    ),
]


def _indices(serving: ServingModel, ids: list[str], unknown: list[str]) -> list[int]:
    index_of = serving.index_of
    found: list[int] = []
    for item_id in ids:
        index = index_of.get(item_id)
        if index is None:
            unknown.append(item_id)
        else:
            found.append(index)
    return found


def recommend(
    body: RecommendBody,
    serving: ServingModelDep,
    catalog: CatalogDep,
    cache: CacheDep,
    metrics: MetricsDep,
    settings: SettingsDep,
    request_log: RequestLogDep,
    request_id: RequestIdDep,
) -> RecommendResponse:
    """Top-k items for a new user's support set; support and `exclude` items never appear.

    Empty support: the popularity ranking, flagged `"fallback": "popularity"`, with scores
    = train positive count / the largest count. `uncertainty_samples` = S > 0: each returned
    item's score std over S draws of z, seeded by the support set so answers repeat.
    """
    started = time.perf_counter()
    if len(body.support) > settings.max_support:
        raise InvalidRequestError(
            f"support has {len(body.support)} items; at most {settings.max_support} allowed"
        )
    unknown: dict[str, list[str]] = {"support": [], "exclude": [], "candidates": []}
    support_ids = [item.item_id for item in body.support]
    support_indices = _indices(serving, support_ids, unknown["support"])
    exclude_indices = _indices(serving, body.exclude, unknown["exclude"])
    candidate_indices = (
        _indices(serving, body.candidates, unknown["candidates"])
        if body.candidates is not None
        else None
    )
    if any(unknown.values()):
        raise UnknownItemsError(unknown)
    config = serving.loaded.model.config
    out_of_range = [
        item.item_id
        for item in body.support
        if not config.label_min <= item.rating <= config.label_max
    ]
    if out_of_range:
        raise RatingRangeError(
            f"ratings must lie within [{config.label_min:g}, {config.label_max:g}] for model "
            f"{serving.version}; out of range: {name_ids(out_of_range)}"
        )
    excluded = np.asarray(support_indices + exclude_indices, dtype=np.int64)
    candidates = (
        np.asarray(candidate_indices, dtype=np.int64) if candidate_indices is not None else None
    )

    cached = False
    fallback: str | None = None
    uncertainty: list[float] | None = None
    inference_started = time.perf_counter()
    if not support_indices:
        fallback = "popularity"
        chosen = _popularity_top(
            serving, catalog=catalog, excluded=excluded, candidates=candidates, k=body.k
        )
        chosen_scores = catalog.popularity[chosen] / (catalog.top_popularity or 1.0)
        metrics.inference_latency.labels(path="popularity").observe(
            time.perf_counter() - inference_started
        )
    else:
        pairs = [(item.item_id, item.rating) for item in body.support]
        digest = support_digest(pairs)
        state, cached = _task_state(
            serving,
            cache=cache,
            metrics=metrics,
            key=cache_key(model_version=serving.version, digest=digest),
            support_indices=support_indices,
            labels=[item.rating for item in body.support],
        )
        chosen, chosen_scores = _model_top(
            serving, state=state, excluded=excluded, candidates=candidates, k=body.k
        )
        if body.uncertainty_samples > 0 and chosen.size:
            uncertainty = _uncertainty(
                serving, state=state, chosen=chosen, samples=body.uncertainty_samples, digest=digest
            )
        metrics.inference_latency.labels(path="model").observe(
            time.perf_counter() - inference_started
        )

    names = catalog.names
    items = serving.items
    response = RecommendResponse(
        items=[
            RecommendedItem(
                item_id=items[index],
                name=names[index],
                score=float(score),
                uncertainty=uncertainty[position] if uncertainty is not None else None,
            )
            for position, (index, score) in enumerate(
                zip(chosen.tolist(), chosen_scores.tolist(), strict=True)
            )
        ],
        model_version=serving.version,
        cached=cached,
        fallback="popularity" if fallback else None,
        request_id=request_id,
    )
    _record(
        request_log,
        metrics,
        RequestLogEntry(
            request_id=request_id,
            model_version=serving.version,
            support_size=len(support_indices),
            k=body.k,
            latency_ms=(time.perf_counter() - started) * 1000.0,
            cache_hit=cached,
            fallback=fallback,
        ),
    )
    return response


def _task_state(
    serving: ServingModel,
    *,
    cache: TaskStateCache,
    metrics: Metrics,
    key: str,
    support_indices: list[int],
    labels: list[float],
) -> tuple[TaskState, bool]:
    """The cached task state when there is a valid one, else a fresh encode (then cached)."""
    scorer = serving.loaded.scorer
    payload = cache.get(key)
    if payload is not None:
        try:
            state = unpack_state(payload, device=scorer.device)
        except ValueError as error:
            logger.warning("ignoring a malformed cache entry %s: %s", key, error)
        else:
            metrics.cache_hits.inc()
            return state, True
    metrics.cache_misses.inc()
    state = scorer.encode_one(support_indices, labels)
    cache.set(key, pack_state(state))
    return state, False


def _model_top(
    serving: ServingModel,
    *,
    state: TaskState,
    excluded: np.ndarray,
    candidates: np.ndarray | None,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(chosen item indices, their scores), best first."""
    scorer = serving.loaded.scorer
    if candidates is None:
        scores = scorer.scores(state)[0].cpu().numpy()  # (N,)
        chosen = rank(scores, k=k, exclude=excluded)
        return chosen, scores[chosen]
    if candidates.size == 0:
        return candidates, np.zeros(0, dtype=np.float32)
    candidate_tensor = torch.from_numpy(candidates).unsqueeze(0)  # (1, C)
    scores = scorer.scores(state, candidates=candidate_tensor)[0].cpu().numpy()  # (C,)
    positions = rank(scores, k=k, exclude=np.flatnonzero(np.isin(candidates, excluded)))
    return candidates[positions], scores[positions]


def _popularity_top(
    serving: ServingModel,
    *,
    catalog: CatalogView,
    excluded: np.ndarray,
    candidates: np.ndarray | None,
    k: int,
) -> np.ndarray:
    if candidates is None:
        order = serving.popularity_order
        return order[~np.isin(order, excluded)][:k]
    dropped = np.flatnonzero(np.isin(candidates, excluded))
    positions = rank(catalog.popularity[candidates], k=k, exclude=dropped)
    return candidates[positions]


def _uncertainty(
    serving: ServingModel, *, state: TaskState, chosen: np.ndarray, samples: int, digest: str
) -> list[float]:
    """Std over `samples` draws of z of each chosen item's score, seeded by the support set."""
    scorer = serving.loaded.scorer
    generator = torch.Generator(device=scorer.device)
    generator.manual_seed(int(digest[:15], 16))
    sampled = scorer.sampled_scores(
        state,
        samples=samples,
        candidates=torch.from_numpy(chosen).unsqueeze(0),
        generator=generator,
    )  # (S, 1, k)
    return sampled[:, 0, :].std(dim=0, correction=0).cpu().tolist()


def _record(request_log: RequestLogSink, metrics: Metrics, entry: RequestLogEntry) -> None:
    try:
        request_log.record(entry)
    except Exception:
        # The request log is bookkeeping: a broken sink must never fail a recommendation.
        metrics.request_log_failures.inc()
        logger.exception("request log sink failed for %s", entry.request_id)


for _path, _in_schema_name in (("/v1/recommend", "recommend"), ("/recommend", "recommend_alias")):
    router.add_api_route(
        _path,
        recommend,
        methods=["POST"],
        response_model=RecommendResponse,
        responses=_RESPONSES,
        name=_in_schema_name,
        operation_id=_in_schema_name,
        summary="Recommend items for a support set"
        + (" (alias of /v1/recommend)" if _path == "/recommend" else ""),
    )
