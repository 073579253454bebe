"""The recommend path of one `ServingModel`: check a request, take its task state from the cache
or encode it, score and rank (`app.serving.ranking`), or rank by popularity for an empty support
set. A refusal or a model that breaks an invariant is a `ServingError`, never a wrong ranking.
Knows nothing about HTTP, metrics, the answer memo or the request log.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch

from app.errors import (
    InvalidRequestError,
    ModelFaultError,
    RatingRangeError,
    UnknownItemsError,
    name_ids,
)
from app.schemas import RecommendRequest
from app.serving.cache import TaskStateCache, support_digest
from app.serving.model import ServingModel
from app.serving.ranking import (
    Ranking,
    candidate_top,
    popularity_top,
    score_spread,
    shortlist_top,
    whole_catalog_tops,
)
from tanp.model import TaskState
from tanp.scoring import split_states

POPULARITY: Literal["popularity"] = "popularity"


@dataclass(frozen=True, slots=True)
class ScoringLimits:
    """When to rank the candidate stage instead of the whole catalog (CANDIDATES and
    FULL_SCORING_MAX_ITEMS): a catalog of more than `full_scoring_max_items` items on CPU is
    ranked over `candidates` items; on a GPU, scoring every item stays cheap."""

    candidates: int
    full_scoring_max_items: int
    shortlist: int = 0

    def shortlist_count(self, model: ServingModel) -> int | None:
        """How many items the shortlist head hands the decoder for `model`; None: no shortlist
        (a model without the head, a GPU, SHORTLIST 0 or at least the catalog's size)."""
        if model.scorer.device.type == "cuda" or not model.scorer.can_shortlist(self.shortlist):
            return None
        return self.shortlist

    def candidate_count(self, model: ServingModel) -> int | None:
        """How many candidates to score for `model`; None: the whole catalog."""
        if model.config.num_items <= self.full_scoring_max_items:
            return None
        if model.scorer.device.type == "cuda":
            return None
        return self.candidates


@dataclass(frozen=True, slots=True)
class NamedItem:
    item_id: str
    name: str | None


@dataclass(frozen=True, slots=True)
class ScoredItem:
    item_id: str
    name: str | None
    score: float
    uncertainty: float | None
    because: tuple[NamedItem, ...] = ()  # liked support items adding most to its score


@dataclass(frozen=True)
class Recommendation:
    """The answer, best first, and how it was made."""

    items: list[ScoredItem]
    model_version: str
    model_sha256: str  # the weights that made it (a version's name can be reused by a retrain)
    cached: bool  # the task state (or, from the answer memo, the whole answer) was remembered
    fallback: Literal["popularity"] | None
    support_size: int
    inference_seconds: float  # time spent in tanp.scoring (or the popularity lookup)


@dataclass(frozen=True, slots=True)
class CheckedRequest:
    """A request the model accepts: its item indices and its support set's digest."""

    request: RecommendRequest
    support: list[int]
    labels: list[float]
    excluded: np.ndarray  # support and `exclude` indices: never returned
    candidates: np.ndarray | None
    digest: str  # sha256 of the canonical support set ("" when empty): cache key and seed


def check(model: ServingModel, request: RecommendRequest, *, max_support: int) -> CheckedRequest:
    """The request's indices, or the refusal: MAX_SUPPORT (InvalidRequestError), ids not in
    the catalog (UnknownItemsError, named per field), ratings outside the model's label range
    (RatingRangeError)."""
    if len(request.support) > max_support:
        raise InvalidRequestError(
            f"support has {len(request.support)} items; at most {max_support} allowed"
        )
    unknown: dict[str, list[str]] = {"support": [], "exclude": [], "candidates": []}
    support = _indices(model, [item.item_id for item in request.support], unknown["support"])
    exclude = _indices(model, request.exclude, unknown["exclude"])
    candidates = (
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
    return CheckedRequest(
        request=request,
        support=support,
        labels=[item.rating for item in request.support],
        excluded=np.asarray(support + exclude, dtype=np.int64),
        candidates=np.asarray(candidates, dtype=np.int64) if candidates is not None else None,
        digest=(
            support_digest((item.item_id, item.rating) for item in request.support)
            if support
            else ""
        ),
    )


def recommend(
    *,
    model: ServingModel,
    cache: TaskStateCache,
    request: RecommendRequest,
    max_support: int,
    limits: ScoringLimits | None = None,
) -> Recommendation:
    """Top-k items for a new user's support set; support and `exclude` items never appear.
    Raises the refusals of `check` and a `ModelFaultError`; see `answer`."""
    (outcome,) = answer(
        model=model,
        cache=cache,
        checked=[check(model, request, max_support=max_support)],
        limits=limits,
    )
    if isinstance(outcome, ModelFaultError):
        raise outcome
    return outcome


def answer(
    *,
    model: ServingModel,
    cache: TaskStateCache,
    checked: Sequence[CheckedRequest],
    limits: ScoringLimits | None,
) -> list[Recommendation | ModelFaultError]:
    """Each checked request's answer, or the fault of the model on it, in order.

    Empty support: the popularity ranking, flagged `fallback="popularity"`, with scores = train
    positive count / the largest count. Otherwise the task states come from the cache in one
    round trip, the missing ones are encoded in one padded batch and written back together.
    Request candidates are scored as given; without them, a catalog `limits` marks as large is
    ranked over the scorer's candidate stage only (no limits: always the whole catalog).
    `uncertainty_samples` = S > 0: each returned item's score std over S draws of z, seeded by
    the support set so answers repeat. Answers equal those of one request at a time, to float
    rounding; a batch whose scoring raises is answered one request at a time, so a fault is
    charged to its own request.
    """
    started = time.perf_counter()
    outcomes: dict[int, Recommendation | ModelFaultError] = {
        position: _popularity_answer(model, request, started=started)
        for position, request in enumerate(checked)
        if not request.support
    }
    modelled = [position for position, request in enumerate(checked) if request.support]
    if modelled:
        requests = [checked[position] for position in modelled]
        try:
            scored = _score(model, cache=cache, checked=requests, limits=limits, started=started)
        except (RuntimeError, IndexError) as error:
            if out_of_memory(error):
                raise
            if len(requests) == 1:
                scored = [scoring_fault(model, error)]
            else:  # one at a time: each fault is charged to its own request
                scored = [
                    answer(model=model, cache=cache, checked=[request], limits=limits)[0]
                    for request in requests
                ]
        outcomes.update(zip(modelled, scored, strict=True))
    return [outcomes[position] for position in range(len(checked))]


def _score(
    model: ServingModel,
    *,
    cache: TaskStateCache,
    checked: list[CheckedRequest],
    limits: ScoringLimits | None,
    started: float,
) -> list[Recommendation | ModelFaultError]:
    """Task states, then each request's ranking: over its candidates as soon as it has them,
    then over the whole catalog for the others."""
    states, remembered = _task_states(model, cache=cache, checked=checked)
    shortlist = limits.shortlist_count(model) if limits is not None else None
    count = limits.candidate_count(model) if limits is not None and shortlist is None else None
    outcomes: dict[int, Recommendation | ModelFaultError] = {}
    whole: list[int] = []
    for index, (request, state) in enumerate(zip(checked, states, strict=True)):
        candidates = request.candidates
        if candidates is None and count is not None:
            candidates = model.scorer.candidates(state, count=count)[0].cpu().numpy()
        if candidates is None and shortlist is None:
            whole.append(index)
            continue
        if candidates is None:
            assert shortlist is not None
            ranking = shortlist_top(
                model, state=state, count=shortlist, k=request.request.k, excluded=request.excluded
            )
        else:
            ranking = candidate_top(
                model,
                state=state,
                candidates=candidates,
                k=request.request.k,
                excluded=request.excluded,
            )
        outcomes[index] = _finish(
            model, request, state=state, ranking=ranking, cached=remembered[index], started=started
        )
    rankings = whole_catalog_tops(
        model,
        states=[states[index] for index in whole],
        ks=[checked[index].request.k for index in whole],
        excluded=[checked[index].excluded for index in whole],
    )
    for index, ranking in zip(whole, rankings, strict=True):
        outcomes[index] = _finish(
            model,
            checked[index],
            state=states[index],
            ranking=ranking,
            cached=remembered[index],
            started=started,
        )
    return [outcomes[index] for index in range(len(checked))]


def _task_states(
    model: ServingModel, *, cache: TaskStateCache, checked: list[CheckedRequest]
) -> tuple[list[TaskState], list[bool]]:
    """Each request's task state and whether the cache had it: one read, one padded encode of
    those missing, one write."""
    scorer = model.scorer
    found = cache.get_many(
        weights_sha256=model.weights_sha256,
        digests=[request.digest for request in checked],
        device=scorer.device,
        shape=model.state_shape,
    )
    missing = [index for index, state in enumerate(found) if state is None]
    encoded: dict[int, TaskState] = {}
    if missing:
        batch = scorer.encode_many([(checked[i].support, checked[i].labels) for i in missing])
        encoded = dict(zip(missing, split_states(batch), strict=True))
        cache.put_many(
            weights_sha256=model.weights_sha256,
            states={checked[index].digest: state for index, state in encoded.items()},
        )
    states: list[TaskState] = []
    for index, state in enumerate(found):
        ready = encoded.get(index, state)
        assert ready is not None
        states.append(ready)
    return states, [index not in encoded for index in range(len(checked))]


def _finish(
    model: ServingModel,
    request: CheckedRequest,
    *,
    state: TaskState,
    ranking: Ranking | ModelFaultError,
    cached: bool,
    started: float,
) -> Recommendation | ModelFaultError:
    """The answer of a ranking, with its uncertainty when asked for."""
    if isinstance(ranking, ModelFaultError):
        return ranking
    chosen, scores = ranking
    uncertainty = None
    samples = request.request.uncertainty_samples
    if samples > 0 and chosen.size:
        try:
            uncertainty = score_spread(
                model, state=state, chosen=chosen, samples=samples, digest=request.digest
            )
        except ModelFaultError as fault:
            return fault
    return _answer(
        model,
        request,
        chosen=chosen,
        scores=scores,
        uncertainty=uncertainty,
        because=model.scorer.because(state, targets=chosen),
        started=started,
        cached=cached,
    )


def _popularity_answer(
    model: ServingModel, request: CheckedRequest, *, started: float
) -> Recommendation:
    chosen = popularity_top(
        model, excluded=request.excluded, candidates=request.candidates, k=request.request.k
    )
    scores = model.popularity[chosen] / model.top_popularity
    return _answer(model, request, chosen=chosen, scores=scores, uncertainty=None, started=started)


def _answer(
    model: ServingModel,
    request: CheckedRequest,
    *,
    chosen: np.ndarray,
    scores: np.ndarray,
    uncertainty: list[float] | None,
    started: float,
    because: list[list[int]] | None = None,
    cached: bool = False,
) -> Recommendation:
    items = [
        ScoredItem(
            item_id=model.items[index],
            name=model.names[index],
            score=score,
            uncertainty=uncertainty[position] if uncertainty is not None else None,
            because=named(model, because[position]) if because is not None else (),
        )
        for position, (index, score) in enumerate(
            zip(chosen.tolist(), scores.tolist(), strict=True)
        )
    ]
    return Recommendation(
        items=items,
        model_version=model.version,
        model_sha256=model.weights_sha256,
        cached=cached,
        fallback=None if request.support else POPULARITY,
        support_size=len(request.support),
        inference_seconds=time.perf_counter() - started,
    )


def named(model: ServingModel, indices: Sequence[int]) -> tuple[NamedItem, ...]:
    """Item indices -> their external ids and names."""
    return tuple(NamedItem(item_id=model.items[i], name=model.names[i]) for i in indices)


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


def scoring_fault(model: ServingModel, error: BaseException) -> ModelFaultError:
    fault = ModelFaultError(
        version=model.version, reason=f"scoring failed: {type(error).__name__}", kind="error"
    )
    fault.__cause__ = error
    return fault


def out_of_memory(error: BaseException) -> bool:
    """Memory exhaustion is the machine's trouble, not the model's: never marked as a fault."""
    return isinstance(error, torch.OutOfMemoryError) or "alloc" in str(error).lower()
