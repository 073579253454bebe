"""The recommend service: a support set -> the top-k items of one `ServingModel`.

`recommend` checks the request against the model (MAX_SUPPORT, catalog ids, label range), takes
the task state from the cache or encodes it, scores, ranks, draws the uncertainty and falls back
to popularity for an empty support set; refusals are `ServingError`s. Over a catalog larger
than `ScoringLimits.full_scoring_max_items` on CPU, only the scorer's candidate stage (the liked
support items' neighbours, then the most popular items) is scored and ranked. Scoring goes only
through `tanp.scoring` (the code offline evaluation uses); a model that scores NaN or infinity,
or fails inside scoring, is a `ModelFaultError`, never a wrong ranking or an anonymous 500.
`Recommender` is the per-app wrapper that also counts every call (Prometheus), reports model
faults and writes the request-log entry. Knows nothing about HTTP.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from app.cache import TaskStateCache, support_digest
from app.errors import (
    InvalidRequestError,
    ModelFaultError,
    RatingRangeError,
    UnknownItemsError,
    name_ids,
)
from app.holder import ServingModel
from app.request_log import RequestLogEntry, RequestLogSink
from app.schemas import RecommendRequest
from app.telemetry import Metrics
from tanp.model import TaskState
from tanp.scoring import rank

logger = logging.getLogger(__name__)

POPULARITY: Literal["popularity"] = "popularity"


@dataclass(frozen=True, slots=True)
class ScoringLimits:
    """When to rank the candidate stage instead of the whole catalog (CANDIDATES and
    FULL_SCORING_MAX_ITEMS): a catalog of more than `full_scoring_max_items` items on CPU is
    ranked over `candidates` items; on a GPU, scoring every item stays cheap."""

    candidates: int = 2_000
    full_scoring_max_items: int = 50_000

    def candidate_count(self, model: ServingModel) -> int | None:
        """How many candidates to score for `model`; None: the whole catalog."""
        if model.config.num_items <= self.full_scoring_max_items:
            return None
        if model.scorer.device.type == "cuda":
            return None
        return self.candidates


@dataclass(frozen=True, slots=True)
class ScoredItem:
    item_id: str
    name: str | None
    score: float
    uncertainty: float | None


@dataclass(frozen=True)
class Recommendation:
    """The answer, best first, and how it was made."""

    items: list[ScoredItem]
    model_version: str
    cached: bool  # the task state came from the cache
    fallback: Literal["popularity"] | None
    support_size: int
    inference_seconds: float  # time spent in tanp.scoring (or the popularity lookup)


def recommend(
    *,
    model: ServingModel,
    cache: TaskStateCache,
    request: RecommendRequest,
    max_support: int,
    limits: ScoringLimits | None = None,
) -> Recommendation:
    """Top-k items for a new user's support set; support and `exclude` items never appear.

    Without request candidates, a catalog `limits` marks as large is ranked over the scorer's
    candidate stage only (`limits.candidate_count`; no limits: always the whole catalog);
    request candidates are always scored as given.

    Empty support: the popularity ranking, flagged `fallback="popularity"`, with scores = train
    positive count / the largest count. `uncertainty_samples` = S > 0: each returned item's
    score std over S draws of z, seeded by the support set so answers repeat.
    """
    if len(request.support) > max_support:
        raise InvalidRequestError(
            f"support has {len(request.support)} items; at most {max_support} allowed"
        )
    unknown: dict[str, list[str]] = {"support": [], "exclude": [], "candidates": []}
    support = _indices(model, [item.item_id for item in request.support], unknown["support"])
    exclude = _indices(model, request.exclude, unknown["exclude"])
    candidate_list = (
        _indices(model, request.candidates, unknown["candidates"])
        if request.candidates is not None
        else None
    )
    if any(unknown.values()):
        raise UnknownItemsError(unknown)
    config = model.config
    out_of_range = [
        item.item_id
        for item in request.support
        if not config.label_min <= item.rating <= config.label_max
    ]
    if out_of_range:
        raise RatingRangeError(
            f"ratings must lie within [{config.label_min:g}, {config.label_max:g}] for model "
            f"{model.version}; out of range: {name_ids(out_of_range)}"
        )
    excluded = np.asarray(support + exclude, dtype=np.int64)
    candidates = np.asarray(candidate_list, dtype=np.int64) if candidate_list is not None else None

    started = time.perf_counter()
    cached = False
    uncertainty: list[float] | None = None
    if not support:
        chosen = _popularity_top(model, excluded=excluded, candidates=candidates, k=request.k)
        scores = model.popularity[chosen] / model.top_popularity
    else:
        labels = [item.rating for item in request.support]
        digest = support_digest((item.item_id, item.rating) for item in request.support)
        state = cache.get(model_version=model.version, digest=digest, device=model.scorer.device)
        cached = state is not None
        try:
            if state is None:
                state = model.scorer.encode_one(support, labels)
                cache.put(model_version=model.version, digest=digest, state=state)
            count = (
                limits.candidate_count(model) if limits is not None and candidates is None else None
            )
            if count is not None:
                candidates = model.scorer.candidates(state, count=count)[0].cpu().numpy()
            chosen, scores = _model_top(
                model, state=state, excluded=excluded, candidates=candidates, k=request.k
            )
            if request.uncertainty_samples > 0 and chosen.size:
                uncertainty = _uncertainty(
                    model,
                    state=state,
                    chosen=chosen,
                    samples=request.uncertainty_samples,
                    digest=digest,
                )
        except (RuntimeError, IndexError) as error:
            if _out_of_memory(error):
                raise
            raise ModelFaultError(
                version=model.version,
                reason=f"scoring failed: {type(error).__name__}",
                kind="error",
            ) from error
    inference_seconds = time.perf_counter() - started

    items = [
        ScoredItem(
            item_id=model.items[index],
            name=model.names[index],
            score=score,
            uncertainty=uncertainty[position] if uncertainty is not None else None,
        )
        for position, (index, score) in enumerate(
            zip(chosen.tolist(), scores.tolist(), strict=True)
        )
    ]
    return Recommendation(
        items=items,
        model_version=model.version,
        cached=cached,
        fallback=None if support else POPULARITY,
        support_size=len(support),
        inference_seconds=inference_seconds,
    )


class Recommender:
    """`recommend` for one app: its cache, MAX_SUPPORT and scoring limits, counted and
    request-logged."""

    def __init__(
        self,
        *,
        cache: TaskStateCache,
        metrics: Metrics,
        request_log: RequestLogSink,
        max_support: int,
        limits: ScoringLimits | None = None,
        on_model_fault: Callable[[ModelFaultError], None] | None = None,
    ) -> None:
        self.cache = cache
        self.metrics = metrics
        self.request_log = request_log
        self.max_support = max_support
        self.limits = limits
        self.on_model_fault = on_model_fault

    def recommend(
        self, *, model: ServingModel, request: RecommendRequest, request_id: str
    ) -> Recommendation:
        """`recommend`, plus metrics and one request-log entry per answered call; a model
        fault is counted and reported (`on_model_fault`) before it is raised."""
        started = time.perf_counter()
        try:
            answer = recommend(
                model=model,
                cache=self.cache,
                request=request,
                max_support=self.max_support,
                limits=self.limits,
            )
        except ModelFaultError as fault:
            self.metrics.model_faults.labels(version=fault.version, reason=fault.kind).inc()
            logger.error("request %s: %s", request_id, fault.detail)
            if self.on_model_fault is not None:
                self.on_model_fault(fault)
            raise
        metrics = self.metrics
        if answer.fallback is None:
            (metrics.cache_hits if answer.cached else metrics.cache_misses).inc()
        path = "model" if answer.fallback is None else "popularity"
        metrics.inference_latency.labels(path=path).observe(answer.inference_seconds)
        self._log(
            RequestLogEntry(
                request_id=request_id,
                model_version=answer.model_version,
                support_size=answer.support_size,
                k=request.k,
                latency_ms=(time.perf_counter() - started) * 1000.0,
                cache_hit=answer.cached,
                fallback=answer.fallback,
            )
        )
        return answer

    def _log(self, entry: RequestLogEntry) -> None:
        try:
            self.request_log.record(entry)
        except Exception:
            # The request log is bookkeeping: a broken sink must never fail a recommendation.
            self.metrics.request_log_dropped.inc()
            logger.exception("request log sink failed for %s", entry.request_id)


def _indices(model: ServingModel, ids: list[str], unknown: list[str]) -> list[int]:
    """Model indices of `ids`; ids not in the catalog are appended to `unknown`."""
    index_of = model.index_of
    found: list[int] = []
    for item_id in ids:
        index = index_of.get(item_id)
        if index is None:
            unknown.append(item_id)
        else:
            found.append(index)
    return found


def _model_top(
    model: ServingModel,
    *,
    state: TaskState,
    excluded: np.ndarray,
    candidates: np.ndarray | None,
    k: int,
) -> tuple[np.ndarray, np.ndarray]:
    """(chosen item indices, their scores), best first."""
    scorer = model.scorer
    if candidates is None:
        scores = scorer.scores(state)[0].cpu().numpy()  # (N,)
        _check_finite(model, scores)
        chosen = rank(scores, k=k, exclude=excluded)
        return chosen, scores[chosen]
    if candidates.size == 0:
        return candidates, np.zeros(0, dtype=np.float32)
    candidate_tensor = torch.from_numpy(candidates).unsqueeze(0)  # (1, C)
    scores = scorer.scores(state, candidates=candidate_tensor)[0].cpu().numpy()  # (C,)
    _check_finite(model, scores)
    positions = rank(scores, k=k, exclude=np.flatnonzero(np.isin(candidates, excluded)))
    return candidates[positions], scores[positions]


def _check_finite(model: ServingModel, values: np.ndarray | torch.Tensor) -> None:
    """The invariant every answer rests on: no NaN or infinity in what the model computed."""
    if not bool(torch.isfinite(torch.as_tensor(values)).all()):
        raise ModelFaultError(version=model.version, reason="non-finite scores", kind="non_finite")


def _out_of_memory(error: BaseException) -> bool:
    """Memory exhaustion is the machine's trouble, not the model's: never marked as a fault."""
    return isinstance(error, torch.OutOfMemoryError) or "alloc" in str(error).lower()


def _popularity_top(
    model: ServingModel, *, excluded: np.ndarray, candidates: np.ndarray | None, k: int
) -> np.ndarray:
    if candidates is None:
        order = model.popularity_order
        return order[~np.isin(order, excluded)][:k]
    dropped = np.flatnonzero(np.isin(candidates, excluded))
    positions = rank(model.popularity[candidates], k=k, exclude=dropped)
    return candidates[positions]


def _uncertainty(
    model: ServingModel, *, state: TaskState, chosen: np.ndarray, samples: int, digest: str
) -> list[float]:
    """Std over `samples` draws of z of each chosen item's score, seeded by the support set."""
    scorer = model.scorer
    generator = torch.Generator(device=scorer.device)
    generator.manual_seed(int(digest[:15], 16))
    sampled = scorer.sampled_scores(
        state,
        samples=samples,
        candidates=torch.from_numpy(chosen).unsqueeze(0),
        generator=generator,
    )  # (S, 1, k)
    spread = sampled[:, 0, :].std(dim=0, correction=0)
    _check_finite(model, spread)
    return spread.cpu().tolist()
