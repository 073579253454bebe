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
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from app.errors import (
    InvalidRequestError,
    ModelFaultError,
    RatingRangeError,
    ServingError,
    UnknownItemsError,
    name_ids,
)
from app.schemas import RecommendRequest
from app.serving.batcher import MicroBatcher
from app.serving.cache import TaskStateCache, support_digest
from app.serving.model import ServingModel
from app.storage.request_log import RequestLogEntry, RequestLogSink
from app.telemetry import Metrics
from tanp.model import TaskState
from tanp.scoring import rank, split_states, stack_states

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
    (outcome,) = recommend_many(
        model=model, cache=cache, requests=[request], max_support=max_support, limits=limits
    )
    if isinstance(outcome, ServingError):
        raise outcome
    return outcome


def recommend_many(
    *,
    model: ServingModel,
    cache: TaskStateCache,
    requests: Sequence[RecommendRequest],
    max_support: int,
    limits: ScoringLimits | None = None,
) -> list[Recommendation | ServingError]:
    """`recommend` for several requests at once, each answer or refusal in its request's place.

    The cache is read in one round trip; the missing task states are encoded in one padded
    batch and written back together; the whole-catalog rankings are decoded in one (B, N)
    forward on a GPU, one task at a time on CPU. Answers equal `recommend`'s one by one, to
    float rounding. A batch whose scoring raises is answered one request at a time, so a fault
    is charged to its own request.
    """
    started = time.perf_counter()
    outcomes: list[Recommendation | ServingError | None] = [None] * len(requests)
    asks: list[_Ask] = []
    for position, request in enumerate(requests):
        try:
            asks.append(_prepare(model, request, max_support=max_support, position=position))
        except ServingError as refusal:
            outcomes[position] = refusal
    scored: list[_Ask] = []
    for ask in asks:
        remembered = _remembered(model, cache, ask, started=started)
        if remembered is not None:
            outcomes[ask.position] = remembered
        elif ask.support:
            scored.append(ask)
    for ask in asks:
        if not ask.support:
            chosen = _popularity_top(
                model, excluded=ask.excluded, candidates=ask.candidates, k=ask.request.k
            )
            scores = model.popularity[chosen] / model.top_popularity
            outcomes[ask.position] = _answer(
                model, ask, chosen=chosen, scores=scores, uncertainty=None, started=started
            )
    if scored:
        try:
            _score(
                model, cache=cache, asks=scored, limits=limits, outcomes=outcomes, started=started
            )
        except (RuntimeError, IndexError) as error:
            if _out_of_memory(error):
                raise
            if len(scored) == 1:
                fault = ModelFaultError(
                    version=model.version,
                    reason=f"scoring failed: {type(error).__name__}",
                    kind="error",
                )
                fault.__cause__ = error
                outcomes[scored[0].position] = fault
            else:  # one at a time: each fault is charged to its own request
                for ask in scored:
                    (outcomes[ask.position],) = recommend_many(
                        model=model,
                        cache=cache,
                        requests=[ask.request],
                        max_support=max_support,
                        limits=limits,
                    )
    memo = cache.answers
    if memo is not None:
        for ask in scored:
            answer = outcomes[ask.position]
            if isinstance(answer, Recommendation):
                memo.put(_memo_key(model, ask), tuple(answer.items))
    assert all(outcome is not None for outcome in outcomes)
    return [outcome for outcome in outcomes if outcome is not None]


@dataclass(frozen=True, slots=True)
class _Ask:
    """One request checked against the model: its item indices and cache digest."""

    position: int
    request: RecommendRequest
    support: list[int]
    labels: list[float]
    excluded: np.ndarray
    candidates: np.ndarray | None
    digest: str


def remembered_answer(
    *, model: ServingModel, cache: TaskStateCache, request: RecommendRequest, max_support: int
) -> Recommendation | None:
    """The answer memo's answer to `request`, or None (no memo, not remembered, or a request
    `recommend` refuses: that refusal is its to raise). Cheap and non-blocking: no model call."""
    if cache.answers is None or not request.support:
        return None
    try:
        ask = _prepare(model, request, max_support=max_support, position=0)
    except ServingError:
        return None
    return _remembered(model, cache, ask, started=time.perf_counter())


def _remembered(
    model: ServingModel, cache: TaskStateCache, ask: _Ask, *, started: float
) -> Recommendation | None:
    memo = cache.answers
    remembered = memo.get(_memo_key(model, ask)) if memo is not None and ask.support else None
    if remembered is None:
        return None
    return Recommendation(
        items=list(remembered),
        model_version=model.version,
        cached=True,
        fallback=None,
        support_size=len(ask.support),
        inference_seconds=time.perf_counter() - started,
    )


def _memo_key(model: ServingModel, ask: _Ask) -> tuple[object, ...]:
    request = ask.request
    return (
        model.version,
        ask.digest,
        request.k,
        frozenset(request.exclude),
        None if request.candidates is None else tuple(request.candidates),
        request.uncertainty_samples,
    )


def _prepare(
    model: ServingModel, request: RecommendRequest, *, max_support: int, position: int
) -> _Ask:
    """The request's indices, or the refusal (MAX_SUPPORT, unknown ids, label range)."""
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
    return _Ask(
        position=position,
        request=request,
        support=support,
        labels=[item.rating for item in request.support],
        excluded=np.asarray(support + exclude, dtype=np.int64),
        candidates=(
            np.asarray(candidate_list, dtype=np.int64) if candidate_list is not None else None
        ),
        digest=(
            support_digest((item.item_id, item.rating) for item in request.support)
            if support
            else ""
        ),
    )


def _score(
    model: ServingModel,
    *,
    cache: TaskStateCache,
    asks: list[_Ask],
    limits: ScoringLimits | None,
    outcomes: list[Recommendation | ServingError | None],
    started: float,
) -> None:
    """Task states (cache, else one batched encode), then the rankings, into `outcomes`."""
    scorer = model.scorer
    found = cache.get_many(
        model_version=model.version, digests=[ask.digest for ask in asks], device=scorer.device
    )
    missing = [index for index, state in enumerate(found) if state is None]
    encoded: dict[int, TaskState] = {}
    if missing:
        batch = scorer.encode_many([(asks[i].support, asks[i].labels) for i in missing])
        encoded = dict(zip(missing, split_states(batch), strict=True))
        cache.put_many(
            model_version=model.version,
            states={asks[index].digest: state for index, state in encoded.items()},
        )
    states = [encoded.get(index) or state for index, state in enumerate(found)]
    count = limits.candidate_count(model) if limits is not None else None
    whole: list[int] = []
    for index, (ask, state) in enumerate(zip(asks, states, strict=True)):
        assert state is not None
        candidates = ask.candidates
        if candidates is None and count is not None:
            candidates = scorer.candidates(state, count=count)[0].cpu().numpy()
        if candidates is None:
            whole.append(index)
            continue
        ranking = _candidate_top(model, state=state, ask=ask, candidates=candidates)
        _finish(model, ask, state=state, cached=index not in encoded, ranking=ranking,
                outcomes=outcomes, started=started)  # fmt: skip
    if not whole:
        return
    ready = [state for state in states if state is not None]
    # On CPU one task at a time: a (B, N, H) decode is slower per task than B decodes of one,
    # measured 1.3 ms per task at B = 1, 1.7 at 2, 4 at 8 on the 3,846-item Last.fm model
    # (one task's activations fit in L2, a batch's do not); on a GPU the batch is the point.
    step = len(whole) if scorer.device.type == "cuda" else 1
    for first in range(0, len(whole), step):
        chunk = whole[first : first + step]
        all_scores = scorer.scores(stack_states([ready[i] for i in chunk])).cpu().numpy()
        _rank_rows(model, asks, chunk=chunk, all_scores=all_scores, states=ready,
                   encoded=encoded, outcomes=outcomes, started=started)  # fmt: skip


def _rank_rows(
    model: ServingModel,
    asks: list[_Ask],
    *,
    chunk: list[int],
    all_scores: np.ndarray,
    states: list[TaskState],
    encoded: dict[int, TaskState],
    outcomes: list[Recommendation | ServingError | None],
    started: float,
) -> None:
    """The rankings of `chunk`'s asks from their (B, N) whole-catalog scores."""
    for row, index in enumerate(chunk):
        ask, scores = asks[index], all_scores[row]
        if not np.isfinite(scores).all():
            outcomes[ask.position] = _non_finite(model)
            continue
        chosen = rank(scores, k=ask.request.k, exclude=ask.excluded)
        _finish(model, ask, state=states[index], cached=index not in encoded,
                ranking=(chosen, scores[chosen]), outcomes=outcomes, started=started)  # fmt: skip


def _finish(
    model: ServingModel,
    ask: _Ask,
    *,
    state: TaskState,
    cached: bool,
    ranking: tuple[np.ndarray, np.ndarray] | ModelFaultError,
    outcomes: list[Recommendation | ServingError | None],
    started: float,
) -> None:
    if isinstance(ranking, ModelFaultError):
        outcomes[ask.position] = ranking
        return
    chosen, scores = ranking
    uncertainty = None
    if ask.request.uncertainty_samples > 0 and chosen.size:
        try:
            uncertainty = _uncertainty(
                model,
                state=state,
                chosen=chosen,
                samples=ask.request.uncertainty_samples,
                digest=ask.digest,
            )
        except ModelFaultError as fault:
            outcomes[ask.position] = fault
            return
    outcomes[ask.position] = _answer(
        model,
        ask,
        chosen=chosen,
        scores=scores,
        uncertainty=uncertainty,
        started=started,
        cached=cached,
    )


def _answer(
    model: ServingModel,
    ask: _Ask,
    *,
    chosen: np.ndarray,
    scores: np.ndarray,
    uncertainty: list[float] | None,
    started: float,
    cached: bool = False,
) -> Recommendation:
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
        fallback=None if ask.support else POPULARITY,
        support_size=len(ask.support),
        inference_seconds=time.perf_counter() - started,
    )


@dataclass(frozen=True, slots=True)
class _Call:
    model: ServingModel
    request: RecommendRequest
    request_id: str
    started: float  # perf_counter when the recommender got it


class Recommender:
    """`recommend` for one app: its cache, MAX_SUPPORT and scoring limits, counted and
    request-logged; `recommend_async` micro-batches concurrent calls (`app.serving.batcher`)."""

    def __init__(
        self,
        *,
        cache: TaskStateCache,
        metrics: Metrics,
        request_log: RequestLogSink,
        max_support: int,
        limits: ScoringLimits | None = None,
        max_batch: int = 32,
        on_model_fault: Callable[[ModelFaultError], None] | None = None,
    ) -> None:
        self.cache = cache
        self.metrics = metrics
        self.request_log = request_log
        self.max_support = max_support
        self.limits = limits
        self.on_model_fault = on_model_fault
        self.batcher: MicroBatcher[_Call, Recommendation | ServingError] = MicroBatcher(
            self._recommend_calls, max_batch=max_batch, name="recommend-batch"
        )

    def recommend(
        self, *, model: ServingModel, request: RecommendRequest, request_id: str
    ) -> Recommendation:
        """`recommend`, plus metrics and one request-log entry per answered call; a model
        fault is counted and reported (`on_model_fault`) before it is raised."""
        call = _Call(model, request, request_id, time.perf_counter())
        (outcome,) = self._recommend_calls([call])
        if isinstance(outcome, ServingError):
            raise outcome
        return outcome

    async def recommend_async(
        self, *, model: ServingModel, request: RecommendRequest, request_id: str
    ) -> Recommendation:
        """`recommend` from the event loop: an answer the memo holds is given at once (no
        thread hop); any other call joins the next micro-batch, which runs on the batcher's
        thread with the calls that arrived meanwhile."""
        call = _Call(model, request, request_id, time.perf_counter())
        remembered = remembered_answer(
            model=model, cache=self.cache, request=request, max_support=self.max_support
        )
        if remembered is not None:
            self._account(call, remembered)
            return remembered
        outcome = await self.batcher.submit(call)
        if isinstance(outcome, ServingError):
            raise outcome
        return outcome

    def close(self) -> None:
        self.batcher.close()

    def _recommend_calls(self, calls: Sequence[_Call]) -> list[Recommendation | ServingError]:
        """`recommend_many` per model (a reload may swap it between two calls), then the
        metrics and request log of each outcome."""
        outcomes: list[Recommendation | ServingError | None] = [None] * len(calls)
        by_model: dict[int, list[int]] = {}
        for position, call in enumerate(calls):
            by_model.setdefault(id(call.model), []).append(position)
        for positions in by_model.values():
            answers = recommend_many(
                model=calls[positions[0]].model,
                cache=self.cache,
                requests=[calls[position].request for position in positions],
                max_support=self.max_support,
                limits=self.limits,
            )
            for position, answer in zip(positions, answers, strict=True):
                outcomes[position] = answer
                self._account(calls[position], answer)
        return [outcome for outcome in outcomes if outcome is not None]

    def _account(self, call: _Call, outcome: Recommendation | ServingError) -> None:
        metrics = self.metrics
        if isinstance(outcome, ModelFaultError):
            metrics.model_faults.labels(version=outcome.version, reason=outcome.kind).inc()
            logger.error("request %s: %s", call.request_id, outcome.detail)
            if self.on_model_fault is not None:
                self.on_model_fault(outcome)
            return
        if isinstance(outcome, ServingError):
            return
        if outcome.fallback is None:
            (metrics.cache_hits if outcome.cached else metrics.cache_misses).inc()
        path = "model" if outcome.fallback is None else "popularity"
        metrics.inference_latency.labels(path=path).observe(outcome.inference_seconds)
        self._log(
            RequestLogEntry(
                request_id=call.request_id,
                model_version=outcome.model_version,
                support_size=outcome.support_size,
                k=call.request.k,
                latency_ms=(time.perf_counter() - call.started) * 1000.0,
                cache_hit=outcome.cached,
                fallback=outcome.fallback,
            )
        )

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


def _candidate_top(
    model: ServingModel, *, state: TaskState, ask: _Ask, candidates: np.ndarray
) -> tuple[np.ndarray, np.ndarray] | ModelFaultError:
    """(chosen item indices, their scores) among `candidates`, best first."""
    if candidates.size == 0:
        return candidates, np.zeros(0, dtype=np.float32)
    candidate_tensor = torch.from_numpy(candidates).unsqueeze(0)  # (1, C)
    scores = model.scorer.scores(state, candidates=candidate_tensor)[0].cpu().numpy()  # (C,)
    if not np.isfinite(scores).all():
        return _non_finite(model)
    dropped = np.flatnonzero(np.isin(candidates, ask.excluded))
    positions = rank(scores, k=ask.request.k, exclude=dropped)
    return candidates[positions], scores[positions]


def _non_finite(model: ServingModel) -> ModelFaultError:
    return ModelFaultError(version=model.version, reason="non-finite scores", kind="non_finite")


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
