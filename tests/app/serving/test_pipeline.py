"""`app.serving.pipeline` without HTTP: ranking, exclusions, candidates and the candidate
stage, the popularity fallback, uncertainty, the task-state cache, every refusal, batches."""

from __future__ import annotations

import dataclasses
from typing import Any

import numpy as np
import pytest
import torch
from app_helpers import ITEMS, NAMES, NUM_ITEMS, tiny_model
from serving_helpers import SUPPORT, RaisingScorer

from app.errors import InvalidRequestError, ModelFaultError, RatingRangeError, UnknownItemsError
from app.schemas import RecommendRequest
from app.serving import pipeline
from app.serving.cache import MemoryCache, TaskStateCache, cache_key, support_digest
from app.serving.model import ServingModel
from app.serving.pipeline import Recommendation, ScoringLimits, recommend
from tanp.scoring import Scorer, pack_state, rank


def ask(
    model: ServingModel, cache: TaskStateCache, max_support: int = 100, **body: Any
) -> Recommendation:
    request = RecommendRequest.model_validate(body)
    return recommend(model=model, cache=cache, request=request, max_support=max_support)


def ids(answer: Recommendation) -> list[str]:
    return [item.item_id for item in answer.items]


def test_scores_and_ranking_equal_the_offline_scorer(
    model: ServingModel, cache: TaskStateCache
) -> None:
    answer = ask(model, cache, support=SUPPORT, k=10)
    scorer = Scorer(tiny_model())
    indices = [ITEMS.index(item["item_id"]) for item in SUPPORT]
    scores = scorer.scores(scorer.encode_one(indices, [1.0, 1.0, 0.0]))[0].numpy()
    expected = rank(scores, k=10, exclude=np.array(indices))
    assert ids(answer) == [ITEMS[index] for index in expected]
    np.testing.assert_allclose([item.score for item in answer.items], scores[expected], atol=1e-6)
    assert [item.name for item in answer.items] == [NAMES[index] for index in expected]
    assert (answer.model_version, answer.fallback, answer.support_size) == ("v1", None, 3)
    assert all(item.uncertainty is None for item in answer.items)


def test_support_and_exclude_never_returned(model: ServingModel, cache: TaskStateCache) -> None:
    exclude = ["a0", "a1", "a2"]
    returned = ids(ask(model, cache, support=SUPPORT, k=100, exclude=exclude))
    assert len(returned) == len(ITEMS) - len(SUPPORT) - len(exclude)
    assert not set(returned) & ({item["item_id"] for item in SUPPORT} | set(exclude))


def test_candidates_restrict_the_ranking_with_the_full_catalog_scores(
    model: ServingModel, cache: TaskStateCache
) -> None:
    candidates = ["a5", "a9", "a3", "a30", "a11"]
    answer = ask(model, cache, support=SUPPORT, k=10, candidates=candidates)
    # a3 is in the support set, so it is dropped even though it is a candidate.
    assert sorted(ids(answer)) == sorted(["a5", "a9", "a30", "a11"])
    scores = [item.score for item in answer.items]
    assert scores == sorted(scores, reverse=True)
    full = {item.item_id: item.score for item in ask(model, cache, support=SUPPORT, k=100).items}
    for item in answer.items:
        assert item.score == pytest.approx(full[item.item_id], abs=1e-6)
    assert ask(model, cache, support=SUPPORT, candidates=[]).items == []


def test_empty_support_falls_back_to_popularity(model: ServingModel, cache: TaskStateCache) -> None:
    answer = ask(model, cache, support=[], k=4, exclude=["a1"], uncertainty_samples=4)
    assert answer.fallback == "popularity" and answer.cached is False
    assert ids(answer) == ["a0", "a2", "a3", "a4"]
    # popularity counts are 40, 39, ...; scores are count / largest count
    assert [item.score for item in answer.items] == pytest.approx([1.0, 38 / 40, 37 / 40, 36 / 40])
    assert all(item.uncertainty is None for item in answer.items)
    with_candidates = ask(model, cache, support=[], k=2, candidates=["a30", "a10", "a20"])
    assert ids(with_candidates) == ["a10", "a20"]


def test_uncertainty_is_positive_repeatable_and_leaves_the_scores_alone(
    model: ServingModel, cache: TaskStateCache
) -> None:
    first = ask(model, cache, support=SUPPORT, k=5, uncertainty_samples=8)
    second = ask(model, TaskStateCache(MemoryCache(ttl_seconds=60)), support=SUPPORT, k=5,
                 uncertainty_samples=8)  # fmt: skip
    values = [item.uncertainty for item in first.items]
    assert all(value is not None and value > 0 for value in values)
    assert values == [item.uncertainty for item in second.items]
    plain = ask(model, cache, support=SUPPORT, k=5)
    assert [item.score for item in plain.items] == [item.score for item in first.items]


def test_the_second_identical_support_set_comes_from_the_cache(
    model: ServingModel, cache: TaskStateCache
) -> None:
    first = ask(model, cache, support=SUPPORT, k=10)
    reordered = [SUPPORT[2], SUPPORT[0], {"item_id": "a7", "rating": 1.0}]
    second = ask(model, cache, support=reordered, k=10)
    assert (first.cached, second.cached) == (False, True)
    assert second.items == first.items
    changed = ask(model, cache, support=[*SUPPORT[:2], {"item_id": "a20", "rating": 1}])
    assert changed.cached is False


def test_a_malformed_cache_entry_is_a_miss_and_is_replaced(
    model: ServingModel, cache: TaskStateCache
) -> None:
    pairs = [(str(item["item_id"]), float(str(item["rating"]))) for item in SUPPORT]
    key = cache_key(weights_sha256=model.weights_sha256, digest=support_digest(pairs))
    cache.store.set(key, b"not a state")
    first = ask(model, cache, support=SUPPORT)
    assert first.cached is False
    again = ask(model, cache, support=SUPPORT)
    assert again.cached is True and again.items == first.items


def test_a_state_that_does_not_fit_the_model_is_recomputed_never_served(
    model: ServingModel, cache: TaskStateCache
) -> None:
    """Issue 21: states planted under the model's key (other widths, support indices outside
    its catalog, non-finite values) are misses, replaced by the model's own."""
    pairs = [(str(item["item_id"]), float(str(item["rating"]))) for item in SUPPORT]
    key = cache_key(weights_sha256=model.weights_sha256, digest=support_digest(pairs))
    fresh = ask(model, TaskStateCache(MemoryCache(ttl_seconds=60)), support=SUPPORT)
    own = model.scorer.encode_one([model.index_of[item_id] for item_id, _ in pairs], [1.0] * 3)
    wide = own._replace(task=torch.zeros(1, own.task.shape[1] + 3))
    outside = own._replace(support_items=torch.tensor([[0, 1, 10_000]]))
    nan = torch.full_like(own.prior.mu, float("nan"))
    not_finite = own._replace(prior=own.prior._replace(mu=nan))
    for planted in (wide, outside, not_finite):
        cache.store.set(key, pack_state(planted))
        answer = ask(model, cache, support=SUPPORT)
        assert answer.cached is False
        assert [item.item_id for item in answer.items] == [i.item_id for i in fresh.items]
    assert ask(model, cache, support=SUPPORT).cached is True


def test_new_weights_under_the_same_name_never_read_the_old_states(
    model: ServingModel, cache: TaskStateCache
) -> None:
    ask(model, cache, support=SUPPORT)
    retrained = dataclasses.replace(model, weights_sha256="f" * 64)
    assert retrained.version == model.version
    assert ask(retrained, cache, support=SUPPORT).cached is False
    assert ask(retrained, cache, support=SUPPORT).model_sha256 == "f" * 64


def test_unknown_ids_are_named_per_field(model: ServingModel, cache: TaskStateCache) -> None:
    with pytest.raises(UnknownItemsError) as refused:
        ask(model, cache, support=[{"item_id": "u1", "rating": 1}], exclude=["u2", "a1"],
            candidates=["a2", "c9"])  # fmt: skip
    assert refused.value.unknown_by_field == {
        "support": ["u1"],
        "exclude": ["u2"],
        "candidates": ["c9"],
    }
    assert refused.value.status_code == 422
    assert "support: 'u1'; exclude: 'u2'; candidates: 'c9'" in refused.value.detail


def test_ratings_outside_the_label_range_are_refused(
    model: ServingModel, cache: TaskStateCache
) -> None:
    with pytest.raises(RatingRangeError, match=r"within \[0, 1\] for model v1.*'a1'"):
        ask(model, cache, support=[{"item_id": "a1", "rating": 5}, {"item_id": "a2", "rating": 1}])


def test_support_over_max_support_is_refused(model: ServingModel, cache: TaskStateCache) -> None:
    with pytest.raises(InvalidRequestError, match="3 items; at most 2 allowed"):
        ask(model, cache, max_support=2, support=SUPPORT)


def test_a_catalog_over_the_full_scoring_limit_ranks_only_the_candidate_stage(
    neighbour_model: ServingModel, cache: TaskStateCache
) -> None:
    limits = ScoringLimits(candidates=8, full_scoring_max_items=NUM_ITEMS - 1)
    assert limits.candidate_count(neighbour_model) == 8
    whole = ScoringLimits(candidates=8, full_scoring_max_items=NUM_ITEMS)
    assert whole.candidate_count(neighbour_model) is None
    support = [
        {"item_id": "a10", "rating": 1},
        {"item_id": "a20", "rating": 1},
        {"item_id": "a11", "rating": 0},
    ]
    indices = [ITEMS.index(item["item_id"]) for item in support]
    scorer = neighbour_model.scorer
    state = scorer.encode_one(indices, [1.0, 1.0, 0.0])
    candidates = [ITEMS[index] for index in scorer.candidates(state, count=8)[0].tolist()]
    # the liked items' neighbours (less a11, a support item), then the most popular items
    assert set(candidates) == {"a12", "a13", "a21", "a22", "a23", "a0", "a1", "a2"}

    request = RecommendRequest.model_validate({"support": support, "k": 100})
    answer = recommend(
        model=neighbour_model, cache=cache, request=request, max_support=100, limits=limits
    )
    returned = ids(answer)
    assert set(returned) == set(candidates)  # support items are never candidates
    assert not set(returned) & {item["item_id"] for item in support}
    scores = [item.score for item in answer.items]
    assert scores == sorted(scores, reverse=True)
    # the candidates' scores are the ones full scoring gives them
    full = recommend(model=neighbour_model, cache=cache, request=request, max_support=100)
    assert len(full.items) == NUM_ITEMS - len(support)
    full_scores = {item.item_id: item.score for item in full.items}
    for item in answer.items:
        assert item.score == pytest.approx(full_scores[item.item_id], abs=1e-6)

    exclude = candidates[:3]
    few = RecommendRequest.model_validate({"support": support, "k": 4, "exclude": exclude})
    top = recommend(model=neighbour_model, cache=cache, request=few, max_support=100, limits=limits)
    assert ids(top) == [item for item in returned if item not in exclude][:4]
    # request candidates are ranked as given, whatever the catalog size
    chosen = RecommendRequest.model_validate({"support": support, "candidates": ["a0", "a39"]})
    given = recommend(
        model=neighbour_model, cache=cache, request=chosen, max_support=100, limits=limits
    )
    assert sorted(ids(given)) == ["a0", "a39"]


def test_a_batch_answers_each_request_as_it_would_be_answered_alone(
    neighbour_model: ServingModel, cache: TaskStateCache
) -> None:
    bodies: list[dict[str, Any]] = [
        {"support": SUPPORT, "k": 5},
        {"support": [{"item_id": "a5", "rating": 1}], "k": 3, "exclude": ["a6"]},
        {"support": [], "k": 2},
        {"support": [{"item_id": "nope", "rating": 1}]},
        {"support": SUPPORT, "k": 4, "candidates": ["a1", "a2", "a9"]},
        {"support": [{"item_id": "a30", "rating": 0}, {"item_id": "a31", "rating": 1}],
         "uncertainty_samples": 4},
    ]  # fmt: skip
    ask(neighbour_model, cache, support=SUPPORT)  # the first request's state is then cached
    requests = [RecommendRequest.model_validate(body) for body in bodies]
    with pytest.raises(UnknownItemsError):  # refused before any batch
        pipeline.check(neighbour_model, requests[3], max_support=100)
    del bodies[3], requests[3]
    checked = [pipeline.check(neighbour_model, request, max_support=100) for request in requests]
    batched = pipeline.answer(model=neighbour_model, cache=cache, checked=checked, limits=None)
    assert [getattr(answer, "cached", None) for answer in batched] == [
        True, False, False, True, False,
    ]  # fmt: skip
    alone_cache = TaskStateCache(MemoryCache(ttl_seconds=60))
    for body, answer in zip(bodies, batched, strict=True):
        assert isinstance(answer, Recommendation)
        alone = ask(neighbour_model, alone_cache, **body)
        assert ids(answer) == ids(alone)
        for mine, theirs in zip(answer.items, alone.items, strict=True):
            assert mine.score == pytest.approx(theirs.score, abs=1e-5)
            assert (mine.uncertainty is None) == (theirs.uncertainty is None)
    # the states the batch encoded went to the cache
    again = pipeline.answer(model=neighbour_model, cache=cache, checked=checked, limits=None)
    assert getattr(again[4], "cached", None) is True


def test_a_scoring_error_in_a_batch_is_charged_to_each_request_alone(
    model: ServingModel, cache: TaskStateCache
) -> None:
    broken = dataclasses.replace(
        model, scorer=RaisingScorer(model.scorer, RuntimeError("index 99 is out of bounds"))
    )
    checked = [
        pipeline.check(broken, RecommendRequest.model_validate(body), max_support=100)
        for body in ({"support": SUPPORT}, {"support": []}, {"support": SUPPORT[:1]})
    ]
    outcomes = pipeline.answer(model=broken, cache=cache, checked=checked, limits=None)
    assert isinstance(outcomes[0], ModelFaultError) and isinstance(outcomes[2], ModelFaultError)
    assert isinstance(outcomes[1], Recommendation) and outcomes[1].fallback == "popularity"


def test_because_names_the_liked_support_items_whose_neighbours_an_item_is(
    neighbour_model: ServingModel, cache: TaskStateCache
) -> None:
    support = [
        {"item_id": "a3", "rating": 1},
        {"item_id": "a5", "rating": 1},
        {"item_id": "a20", "rating": 0},
    ]
    answer = ask(neighbour_model, cache, support=support, k=NUM_ITEMS)
    because = {item.item_id: [liked.item_id for liked in item.because] for item in answer.items}
    # neighbours: a3 -> a4, a5, a6; a5 -> a6, a7, a8; a20 (not liked) -> a21, a22, a23
    assert because["a6"] == ["a3", "a5"]
    assert because["a4"] == ["a3"]
    assert because["a7"] == because["a8"] == ["a5"]
    assert all(not because[item] for item in because if item not in {"a4", "a6", "a7", "a8"})
    named = next(item for item in answer.items if item.item_id == "a6").because
    assert [liked.name for liked in named] == [NAMES[3], NAMES[5]]


def test_because_is_empty_for_the_popularity_fallback(
    neighbour_model: ServingModel, cache: TaskStateCache
) -> None:
    answer = ask(neighbour_model, cache, support=[], k=10)
    assert answer.fallback == "popularity"
    assert all(item.because == () for item in answer.items)
