"""`Recommender`: the recommend path of one app around `app.serving.pipeline`: each request is
checked once, answered from the answer memo when it repeats, else scored in the next
micro-batch; every answer is counted (Prometheus) and request-logged, model faults reported.
Knows nothing about HTTP.
"""

from __future__ import annotations

import hashlib
import json
import logging
import sys
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Generic, TypeVar

from app.errors import ModelFaultError, OverloadedError
from app.schemas import RecommendRequest
from app.serving.batcher import MicroBatcher, QueueFullError
from app.serving.cache import TaskStateCache
from app.serving.model import ServingModel
from app.serving.pipeline import (
    CheckedRequest,
    NamedItem,
    Recommendation,
    ScoredItem,
    ScoringLimits,
    answer,
    check,
)
from app.storage.request_log import RequestLogEntry, RequestLogSink
from app.telemetry import Metrics

logger = logging.getLogger(__name__)
# recommendations, or onboarding questions (app.serving.questions)
Answer = TypeVar("Answer", tuple[ScoredItem, ...], tuple[NamedItem, ...])


class AnswerMemo(Generic[Answer]):
    """This process's latest answers by request, an LRU bounded in bytes (ANSWER_CACHE_BYTES):
    a repeated request is answered without decoding the catalog again. The key is a sha256 of
    the weights' sha256 and the whole request (`memo_key`), never the request's own lists, so
    an entry costs its answer and 32 bytes whatever the request's size. Answers are
    deterministic for the weights and the request, so a hit is exact. Recommendations and
    onboarding questions each keep one."""

    def __init__(self, *, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self._entries: OrderedDict[bytes, tuple[Answer, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: bytes) -> Answer | None:
        with self._lock:
            entry = self._entries.get(key)
            if entry is None:
                return None
            self._entries.move_to_end(key)
            return entry[0]

    def put(self, key: bytes, value: Answer) -> None:
        size = answer_bytes(value)
        if size > self.max_bytes:
            return
        with self._lock:
            previous = self._entries.pop(key, None)
            if previous is not None:
                self._bytes -= previous[1]
            self._entries[key] = (value, size)
            self._bytes += size
            while self._bytes > self.max_bytes:
                _, (_, dropped) = self._entries.popitem(last=False)
                self._bytes -= dropped

    @property
    def bytes(self) -> int:
        """What the entries are charged (`answer_bytes` each)."""
        with self._lock:
            return self._bytes

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


# Python objects of one remembered item (a ScoredItem with slots, two floats or None, its
# `because` tuple) and of one entry (its key, the OrderedDict node, the tuples); a NamedItem
# (a `because` entry or a question) is charged its own; the strings are charged by length.
_ITEM_OVERHEAD_BYTES = 160
_NAMED_OVERHEAD_BYTES = 56
_ENTRY_OVERHEAD_BYTES = 250


def answer_bytes(items: tuple[ScoredItem, ...] | tuple[NamedItem, ...]) -> int:
    """What one remembered answer costs in memory, an upper estimate: the item ids and names
    (their text, plus the str header), the items' `because` entries, the item objects and the
    entry itself."""
    total = _ENTRY_OVERHEAD_BYTES
    for item in items:
        total += _ITEM_OVERHEAD_BYTES + _text_bytes(item)
        for liked in item.because if isinstance(item, ScoredItem) else ():
            total += _NAMED_OVERHEAD_BYTES + _text_bytes(liked)
    return total


def _text_bytes(item: ScoredItem | NamedItem) -> int:
    return sys.getsizeof(item.item_id) + (sys.getsizeof(item.name) if item.name else 0)


def memo_key(*, weights_sha256: str, checked: CheckedRequest) -> bytes:
    """sha256 of everything an answer depends on: the weights, the support set's digest, k,
    the excluded set (order does not matter), the candidates in order, the samples."""
    request = checked.request
    hasher = hashlib.sha256()
    for part in (
        weights_sha256,
        checked.digest,
        str(request.k),
        str(request.uncertainty_samples),
        json.dumps(sorted(set(request.exclude))),
        json.dumps(request.candidates),
    ):
        hasher.update(part.encode("utf-8", "surrogatepass"))
        hasher.update(b"\x00")
    return hasher.digest()


@dataclass(frozen=True, slots=True)
class _Call:
    model: ServingModel
    checked: CheckedRequest
    request_id: str
    started: float  # perf_counter when the recommender got it
    memo_key: bytes | None  # None: not remembered (no memo, or an empty support set)


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
        max_pending: int | None = None,
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
            self._answer_calls, max_batch=max_batch, name="recommend-batch", max_pending=max_pending
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
        try:
            outcome = await self.batcher.submit(call)
        except QueueFullError as error:
            self.metrics.overloaded.inc()
            raise OverloadedError(f"the service is busy ({error}); retry shortly") from error
        if isinstance(outcome, ModelFaultError):
            raise outcome
        return outcome

    def close(self) -> None:
        self.batcher.close()

    def _call(self, model: ServingModel, request: RecommendRequest, request_id: str) -> _Call:
        """The request checked against `model`, once (raises its refusal)."""
        started = time.perf_counter()
        checked = check(model, request, max_support=self.max_support)
        key = None
        if self.answers is not None and checked.support:
            key = memo_key(weights_sha256=model.weights_sha256, checked=checked)
        return _Call(model, checked, request_id, started, key)

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
            model_sha256=call.model.weights_sha256,
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
