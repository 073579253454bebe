"""`Recommender`: the recommend path of one app around `app.serving.pipeline`: each request is
checked once, answered from the answer memo when it repeats, else scored in the next
micro-batch; every answer is counted (Prometheus) and request-logged, model faults reported.
Knows nothing about HTTP.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from app.errors import ModelFaultError
from app.schemas import RecommendRequest
from app.serving.batcher import MicroBatcher
from app.serving.cache import TaskStateCache
from app.serving.model import ServingModel
from app.serving.pipeline import (
    CheckedRequest,
    Recommendation,
    ScoredItem,
    ScoringLimits,
    answer,
    check,
)
from app.storage.request_log import RequestLogEntry, RequestLogSink
from app.telemetry import Metrics

logger = logging.getLogger(__name__)
Answer = TypeVar("Answer")


class AnswerMemo(Generic[Answer]):
    """This process's latest answers by request (the model version in the key), an LRU of at
    most `max_entries` (ANSWER_CACHE_ENTRIES): a repeated request is answered without decoding
    the catalog again. Answers are deterministic for a model version and request, so a hit is
    exact. Recommendations and onboarding questions each keep one."""

    def __init__(self, *, max_entries: int) -> None:
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, Answer] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: Hashable) -> Answer | None:
        with self._lock:
            value = self._entries.get(key)
            if value is not None:
                self._entries.move_to_end(key)
            return value

    def put(self, key: Hashable, value: Answer) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


@dataclass(frozen=True, slots=True)
class _Call:
    model: ServingModel
    checked: CheckedRequest
    request_id: str
    started: float  # perf_counter when the recommender got it
    memo_key: Hashable | None  # None: not remembered (no memo, or an empty support set)


class Recommender:
    """The recommend path of one app: its cache, answer memo, MAX_SUPPORT, scoring limits and
    micro-batcher (`app.serving.batcher`), counted and request-logged."""

    def __init__(
        self,
        *,
        cache: TaskStateCache,
        answers: AnswerMemo[tuple[ScoredItem, ...]] | None,
        metrics: Metrics,
        request_log: RequestLogSink,
        max_support: int,
        max_batch: int,
        limits: ScoringLimits | None = None,
        on_model_fault: Callable[[ModelFaultError], None] | None = None,
    ) -> None:
        self.cache = cache
        self.answers = answers
        self.metrics = metrics
        self.request_log = request_log
        self.max_support = max_support
        self.limits = limits
        self.on_model_fault = on_model_fault
        self.batcher: MicroBatcher[_Call, Recommendation | ModelFaultError] = MicroBatcher(
            self._answer_calls, max_batch=max_batch, name="recommend-batch"
        )

    def recommend(
        self, *, model: ServingModel, request: RecommendRequest, request_id: str
    ) -> Recommendation:
        """Top-k items for `request` on `model`, on this thread; raises the request's refusal
        (`app.serving.pipeline.check`) or the model's fault, which is counted and reported
        (`on_model_fault`) first."""
        (outcome,) = self._answer_calls([self._call(model, request, request_id)])
        if isinstance(outcome, ModelFaultError):
            raise outcome
        return outcome

    async def recommend_async(
        self, *, model: ServingModel, request: RecommendRequest, request_id: str
    ) -> Recommendation:
        """`recommend` from the event loop: a refusal or an answer the memo holds is given at
        once (no thread hop); any other call joins the next micro-batch, which runs on the
        batcher's thread with the calls that arrived meanwhile."""
        call = self._call(model, request, request_id)
        remembered = self._remembered(call, started=time.perf_counter())
        if remembered is not None:
            self._account(call, remembered)
            return remembered
        outcome = await self.batcher.submit(call)
        if isinstance(outcome, ModelFaultError):
            raise outcome
        return outcome

    def close(self) -> None:
        self.batcher.close()

    def _call(self, model: ServingModel, request: RecommendRequest, request_id: str) -> _Call:
        """The request checked against `model`, once (raises its refusal)."""
        started = time.perf_counter()
        checked = check(model, request, max_support=self.max_support)
        memo_key = None
        if self.answers is not None and checked.support:
            memo_key = (
                model.version,
                checked.digest,
                request.k,
                frozenset(request.exclude),
                None if request.candidates is None else tuple(request.candidates),
                request.uncertainty_samples,
            )
        return _Call(model, checked, request_id, started, memo_key)

    def _answer_calls(self, calls: Sequence[_Call]) -> list[Recommendation | ModelFaultError]:
        """Per model (a reload may swap it between two calls): the memo's answers and the
        pipeline's for the rest, then the metrics and request log of each."""
        outcomes: dict[int, Recommendation | ModelFaultError] = {}
        by_model: dict[int, list[int]] = {}
        for position, call in enumerate(calls):
            by_model.setdefault(id(call.model), []).append(position)
        for positions in by_model.values():
            group = [calls[position] for position in positions]
            for position, call, outcome in zip(
                positions, group, self._answer_one_model(group), strict=True
            ):
                outcomes[position] = outcome
                self._account(call, outcome)
        return [outcomes[position] for position in range(len(calls))]

    def _answer_one_model(self, calls: list[_Call]) -> list[Recommendation | ModelFaultError]:
        started = time.perf_counter()
        outcomes: dict[int, Recommendation | ModelFaultError] = {}
        for index, call in enumerate(calls):
            remembered = self._remembered(call, started=started)
            if remembered is not None:
                outcomes[index] = remembered
        unanswered = [index for index in range(len(calls)) if index not in outcomes]
        if unanswered:
            answers = answer(
                model=calls[0].model,
                cache=self.cache,
                checked=[calls[index].checked for index in unanswered],
                limits=self.limits,
            )
            memo = self.answers
            for index, outcome in zip(unanswered, answers, strict=True):
                outcomes[index] = outcome
                key = calls[index].memo_key
                if memo is not None and key is not None and isinstance(outcome, Recommendation):
                    memo.put(key, tuple(outcome.items))  # a fault is never remembered
        return [outcomes[index] for index in range(len(calls))]

    def _remembered(self, call: _Call, *, started: float) -> Recommendation | None:
        if self.answers is None or call.memo_key is None:
            return None
        remembered = self.answers.get(call.memo_key)
        if remembered is None:
            return None
        return Recommendation(
            items=list(remembered),
            model_version=call.model.version,
            cached=True,
            fallback=None,
            support_size=len(call.checked.support),
            inference_seconds=time.perf_counter() - started,
        )

    def _account(self, call: _Call, outcome: Recommendation | ModelFaultError) -> None:
        metrics = self.metrics
        if isinstance(outcome, ModelFaultError):
            metrics.model_faults.labels(version=outcome.version, reason=outcome.kind).inc()
            logger.error("request %s: %s", call.request_id, outcome.detail)
            if self.on_model_fault is not None:
                self.on_model_fault(outcome)
            return
        if outcome.fallback is None:
            (metrics.cache_hits if outcome.cached else metrics.cache_misses).inc()
        path = "model" if outcome.fallback is None else "popularity"
        metrics.inference_latency.labels(path=path).observe(outcome.inference_seconds)
        entry = RequestLogEntry(
            request_id=call.request_id,
            model_version=outcome.model_version,
            support_size=outcome.support_size,
            k=call.checked.request.k,
            latency_ms=(time.perf_counter() - call.started) * 1000.0,
            cache_hit=outcome.cached,
            fallback=outcome.fallback,
        )
        try:
            self.request_log.record(entry)
        except Exception:
            # The request log is bookkeeping: a broken sink must never fail a recommendation.
            metrics.request_log_dropped.inc()
            logger.exception("request log sink failed for %s", entry.request_id)
