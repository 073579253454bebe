"""`Recommender`: counting and request-logging each answer, model faults reported, the
scoring limits applied, the answer memo, and micro-batched calls from the event loop."""

from __future__ import annotations

import asyncio
import dataclasses
from typing import Any

import pytest
from app_helpers import ITEMS
from serving_helpers import SUPPORT, RaisingScorer

from app.errors import ModelFaultError, OverloadedError, UnknownItemsError
from app.schemas import RecommendRequest
from app.serving.cache import MemoryCache, TaskStateCache
from app.serving.model import ServingModel
from app.serving.pipeline import Recommendation, ScoringLimits
from app.serving.recommender import AnswerMemo, Recommender, answer_bytes
from app.storage.request_log import RequestLogEntry
from app.telemetry import Metrics


class RecordingLog:
    def __init__(self) -> None:
        self.entries: list[RequestLogEntry] = []

    def record(self, entry: RequestLogEntry) -> None:
        self.entries.append(entry)


class BrokenLog:
    def record(self, entry: RequestLogEntry) -> None:
        raise RuntimeError("database is gone")


def make_recommender(cache: TaskStateCache, **overrides: Any) -> Recommender:
    """A Recommender over `cache` as the app builds one, less the answer memo by default."""
    values: dict[str, Any] = {
        "answers": None,
        "metrics": Metrics(),
        "request_log": RecordingLog(),
        "max_support": 100,
        "max_batch": 32,
    }
    values.update(overrides)
    return Recommender(cache=cache, **values)


def counter(metrics: Metrics, name: str, **labels: str) -> float:
    value = metrics.registry.get_sample_value(name, labels or None)
    return 0.0 if value is None else value


def test_recommender_counts_and_logs_each_answered_call(
    model: ServingModel, cache: TaskStateCache
) -> None:
    metrics, log = Metrics(), RecordingLog()
    recommender = make_recommender(cache, metrics=metrics, request_log=log)
    for request_id, body in [
        ("r1", {"support": SUPPORT, "k": 7}),
        ("r2", {"support": SUPPORT, "k": 7}),
        ("r3", {"support": [], "k": 3}),
    ]:
        request = RecommendRequest.model_validate(body)
        recommender.recommend(model=model, request=request, request_id=request_id)
    with pytest.raises(UnknownItemsError):
        request = RecommendRequest.model_validate({"support": [{"item_id": "x", "rating": 1}]})
        recommender.recommend(model=model, request=request, request_id="r4")

    assert [(e.request_id, e.support_size, e.k, e.cache_hit, e.fallback) for e in log.entries] == [
        ("r1", 3, 7, False, None),
        ("r2", 3, 7, True, None),
        ("r3", 0, 3, False, "popularity"),
    ]
    assert all(entry.model_version == "v1" and entry.latency_ms > 0 for entry in log.entries)
    assert counter(metrics, "tanp_cache_hits_total") == 1
    assert counter(metrics, "tanp_cache_misses_total") == 1
    assert counter(metrics, "tanp_inference_latency_seconds_count", path="model") == 2
    assert counter(metrics, "tanp_inference_latency_seconds_count", path="popularity") == 1


def test_a_broken_request_log_never_fails_a_recommendation(
    model: ServingModel, cache: TaskStateCache
) -> None:
    metrics = Metrics()
    recommender = make_recommender(cache, metrics=metrics, request_log=BrokenLog(), max_support=9)
    request = RecommendRequest.model_validate({"support": SUPPORT})
    answer = recommender.recommend(model=model, request=request, request_id="r1")
    assert len(answer.items) == 10
    assert counter(metrics, "tanp_request_log_dropped_total") == 1


def test_an_error_inside_scoring_is_a_counted_reported_model_fault(
    model: ServingModel, cache: TaskStateCache
) -> None:
    broken = dataclasses.replace(
        model, scorer=RaisingScorer(model.scorer, RuntimeError("index 99 is out of bounds"))
    )
    metrics, faults = Metrics(), []
    recommender = make_recommender(cache, metrics=metrics, on_model_fault=faults.append)
    request = RecommendRequest.model_validate({"support": SUPPORT})
    with pytest.raises(ModelFaultError, match="scoring failed: RuntimeError") as raised:
        recommender.recommend(model=broken, request=request, request_id="r1")
    assert raised.value.status_code == 503 and faults == [raised.value]
    assert counter(metrics, "tanp_model_faults_total", version="v1", reason="error") == 1
    # the popularity fallback never touches the scorer
    empty = RecommendRequest.model_validate({"support": []})
    assert recommender.recommend(model=broken, request=empty, request_id="r2").fallback


def test_running_out_of_memory_is_not_blamed_on_the_model(
    model: ServingModel, cache: TaskStateCache
) -> None:
    error = RuntimeError("DefaultCPUAllocator: can't allocate memory")
    broken = dataclasses.replace(model, scorer=RaisingScorer(model.scorer, error))
    request = RecommendRequest.model_validate({"support": SUPPORT})
    with pytest.raises(RuntimeError, match="allocate"):
        ask_model = make_recommender(cache)
        ask_model.recommend(model=broken, request=request, request_id="r1")


def test_the_recommender_applies_its_limits(
    neighbour_model: ServingModel, cache: TaskStateCache
) -> None:
    limits = ScoringLimits(candidates=5, full_scoring_max_items=10)
    recommender = make_recommender(cache, limits=limits)
    request = RecommendRequest.model_validate({"support": SUPPORT, "k": 100})
    answer = recommender.recommend(model=neighbour_model, request=request, request_id="r1")
    assert len(answer.items) == 5


def test_a_repeated_request_is_answered_from_the_answer_memo_without_scoring(
    model: ServingModel,
) -> None:
    memo = AnswerMemo(max_bytes=1_000_000)
    recommender = make_recommender(TaskStateCache(MemoryCache(ttl_seconds=60)), answers=memo)

    def ask(serving: ServingModel, **body: Any) -> Recommendation:
        request = RecommendRequest.model_validate(body)
        return recommender.recommend(model=serving, request=request, request_id="r")

    first = ask(model, support=SUPPORT, k=5, exclude=["a1"])
    broken = dataclasses.replace(model, scorer=RaisingScorer(model.scorer, RuntimeError("no")))
    again = ask(broken, support=list(reversed(SUPPORT)), k=5, exclude=["a1"])
    assert (first.cached, again.cached) == (False, True)
    assert again.items == first.items and len(memo) == 1
    with pytest.raises(ModelFaultError):  # another k is another answer: scored again
        ask(broken, support=SUPPORT, k=6, exclude=["a1"])
    with pytest.raises(ModelFaultError):  # and a fault is never remembered
        ask(broken, support=SUPPORT, k=6, exclude=["a1"])
    retrained = dataclasses.replace(model, weights_sha256="e" * 64)  # same name, new weights
    assert ask(retrained, support=SUPPORT, k=5, exclude=["a1"]).cached is False


def test_the_answer_memo_is_bounded_in_bytes_and_keeps_no_request_lists(
    model: ServingModel,
) -> None:
    """Issue 21: distinct requests with long exclude lists never hold more than the memo's
    byte bound, and a key is 32 bytes whatever the request."""
    memo = AnswerMemo(max_bytes=20_000)
    recommender = make_recommender(TaskStateCache(MemoryCache(ttl_seconds=60)), answers=memo)
    exclusions = [item for item in ITEMS if item not in {s["item_id"] for s in SUPPORT}]
    for count in range(1, 30):
        request = RecommendRequest.model_validate(
            {"support": SUPPORT, "k": 10, "exclude": exclusions[:count]}
        )
        recommender.recommend(model=model, request=request, request_id="r")
        assert memo.bytes <= 20_000
    assert 0 < len(memo) < 29
    keys = list(memo._entries)
    assert all(isinstance(key, bytes) and len(key) == 32 for key in keys)
    assert answer_bytes(memo._entries[keys[0]][0]) >= 10 * 160


def test_recommend_async_batches_new_calls_and_answers_remembered_ones_at_once(
    model: ServingModel,
) -> None:
    cache = TaskStateCache(MemoryCache(ttl_seconds=60))
    log = RecordingLog()
    recommender = make_recommender(cache, answers=AnswerMemo(max_bytes=1_000_000), request_log=log)
    request = RecommendRequest.model_validate({"support": SUPPORT, "k": 4})

    async def twice() -> tuple[Recommendation, Recommendation]:
        first = await recommender.recommend_async(model=model, request=request, request_id="r1")
        again = await recommender.recommend_async(model=model, request=request, request_id="r2")
        return first, again

    try:
        first, again = asyncio.run(twice())
    finally:
        recommender.close()
    assert (first.cached, again.cached) == (False, True) and again.items == first.items
    assert (recommender.batcher.batches, recommender.batcher.items) == (1, 1)
    assert [entry.request_id for entry in log.entries] == ["r1", "r2"]
    bad = RecommendRequest.model_validate({"support": [{"item_id": "zz", "rating": 1}]})
    with pytest.raises(UnknownItemsError):  # refused before any batch: nothing logged
        asyncio.run(recommender.recommend_async(model=model, request=bad, request_id="r3"))
    with pytest.raises(UnknownItemsError):
        recommender.recommend(model=model, request=bad, request_id="r3")
    assert recommender.batcher.batches == 1 and len(log.entries) == 2


def test_a_full_batch_queue_answers_503_with_retry_after(model: ServingModel) -> None:
    recommender = make_recommender(TaskStateCache(MemoryCache(ttl_seconds=60)))
    recommender.batcher.max_pending = 0  # every call finds the queue full
    request = RecommendRequest.model_validate({"support": SUPPORT, "k": 4})
    try:
        with pytest.raises(OverloadedError) as refused:
            asyncio.run(recommender.recommend_async(model=model, request=request, request_id="r"))
    finally:
        recommender.close()
    assert refused.value.status_code == 503 and refused.value.headers() == {"Retry-After": "1"}
    assert recommender.metrics.overloaded._value.get() == 1
