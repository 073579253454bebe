"""The shared inference path: scorer equals the module's forward, ranking, cache bytes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tanp.config import TaNPConfig
from tanp.model import TaNP
from tanp.scoring import (
    Scorer,
    pack_state,
    popularity_ranking,
    rank,
    split_states,
    stack_states,
    unpack_state,
)


@pytest.fixture
def model() -> TaNP:
    torch.manual_seed(0)
    model = TaNP(TaNPConfig(num_items=25, film_gamma_offset=1.0))
    model.item_popularity.copy_(torch.arange(25, dtype=torch.float32) % 7)
    return model.eval()


def test_scorer_matches_forward_on_candidates_and_catalog(model: TaNP) -> None:
    scorer = Scorer(model)
    items = torch.tensor([[1, 4, 9, 12]])
    labels = torch.tensor([[1.0, 0.0, 1.0, 0.0]])
    state = scorer.encode(items=items, labels=labels)
    catalog = scorer.scores(state)
    candidates = torch.tensor([[3, 5, 24]])
    forward = model(
        context_items=items,
        context_labels=labels,
        context_mask=torch.ones_like(items, dtype=torch.bool),
        target_items=candidates,
    )
    torch.testing.assert_close(scorer.scores(state, candidates=candidates), forward.prediction)
    torch.testing.assert_close(catalog[:, [3, 5, 24]], forward.prediction)


def test_empty_support_scores_every_item(model: TaNP) -> None:
    scorer = Scorer(model)
    assert scorer.scores(scorer.encode_one([], [])).shape == (1, 25)


def test_sampled_scores_shape_bounds_and_seed(model: TaNP) -> None:
    scorer = Scorer(model)
    state = scorer.encode_one([1, 2], [1.0, 0.0])
    first = scorer.sampled_scores(state, samples=4, generator=torch.Generator().manual_seed(3))
    again = scorer.sampled_scores(state, samples=4, generator=torch.Generator().manual_seed(3))
    assert first.shape == (4, 1, 25)
    assert torch.equal(first, again)
    with pytest.raises(ValueError, match="samples"):
        scorer.sampled_scores(state, samples=33)


def test_rank_is_stable_and_excludes() -> None:
    scores = np.array([0.5, 0.9, 0.5, 0.1, 0.9])
    assert rank(scores).tolist() == [1, 4, 0, 2, 3]
    assert rank(scores, k=2, exclude=[1]).tolist() == [4, 0]


def test_popularity_ranking(model: TaNP) -> None:
    order = popularity_ranking(model)
    assert order[0] == 6 and order[1] == 13
    assert sorted(order.tolist()) == list(range(25))


def test_state_bytes_round_trip_and_refuse_garbage(model: TaNP) -> None:
    scorer = Scorer(model)
    state = scorer.encode_one([1, 2, 3], [1.0, 1.0, 0.0])
    restored = unpack_state(pack_state(state))
    torch.testing.assert_close(scorer.scores(restored), scorer.scores(state))
    payload = pack_state(state)
    for broken in (payload[:10], b"XXXX" + payload[4:], payload + b"\0"):
        with pytest.raises(ValueError):
            unpack_state(broken)


def test_state_carries_the_support_and_candidates_score_as_the_catalog() -> None:
    torch.manual_seed(1)
    model = TaNP(
        TaNPConfig(num_items=12, neighbours=3, film_gamma_offset=1.0, taste_head=True)
    ).eval()
    model.affinity.set_neighbours(
        torch.tensor([[(i + 1) % 12, (i + 2) % 12, (i + 5) % 12] for i in range(12)]),
        torch.tensor([[0.9, 0.5, 0.1]]).expand(12, -1),
    )
    scorer = Scorer(model)
    state = scorer.encode_one([0, 4, 7], [1.0, 1.0, 0.0])
    assert state.support_items.tolist() == [[0, 4, 7]]
    payload = pack_state(state)
    assert len(payload) < 1024  # z, task, assignment and the support: no per-catalog array
    restored = unpack_state(payload)
    torch.testing.assert_close(scorer.scores(restored), scorer.scores(state))
    candidates = torch.tensor([[5, 1, 9]])
    torch.testing.assert_close(
        scorer.scores(state, candidates=candidates), scorer.scores(state)[:, [5, 1, 9]]
    )


def test_top_k_of_rank_equals_the_full_stable_sort_ties_and_exclusions_included() -> None:
    generator = np.random.default_rng(0)
    for trial in range(400):
        size = int(generator.integers(1, 400))
        if trial % 2:  # few distinct values: many ties at the cut
            scores = generator.integers(0, 4, size).astype(np.float32)
        else:
            scores = generator.normal(size=size).astype(np.float32)
        scores[generator.integers(0, size)] = -np.inf
        k = int(generator.integers(1, size + 2))
        exclude = generator.choice(size, int(generator.integers(0, size)), replace=False)
        full = np.argsort(-scores.astype(np.float64), kind="stable")
        expected = full[~np.isin(full, exclude)][:k]
        np.testing.assert_array_equal(rank(scores, k=k, exclude=exclude), expected)


def test_batched_encode_and_stacked_states_score_as_one_at_a_time() -> None:
    torch.manual_seed(0)
    model = TaNP(TaNPConfig(num_items=25, neighbours=4, film_gamma_offset=1.0))
    neighbours = torch.stack([torch.randperm(25)[:4] for _ in range(25)])
    model.affinity.set_neighbours(neighbours, torch.rand(25, 4))
    scorer = Scorer(model)  # with the neighbour affinity, which reads the padded supports
    supports = [([1, 4, 9], [1.0, 0.0, 1.0]), ([2], [1.0]), ([5, 6, 7, 8, 11], [0.0] * 5)]
    batch = scorer.encode_many(supports)
    assert batch.support_items.shape == (3, 5)
    singles = [scorer.encode_one(items, labels) for items, labels in supports]
    for state, single in zip(split_states(batch), singles, strict=True):
        torch.testing.assert_close(state.prior.mu, single.prior.mu)
        torch.testing.assert_close(state.task, single.task)
        torch.testing.assert_close(
            scorer.scores(unpack_state(pack_state(state))), scorer.scores(single)
        )
    stacked = stack_states([unpack_state(pack_state(single)) for single in singles])
    torch.testing.assert_close(
        scorer.scores(stacked), torch.cat([scorer.scores(single) for single in singles])
    )


def test_because_names_the_liked_support_items_that_feed_each_targets_affinity() -> None:
    torch.manual_seed(0)
    model = TaNP(TaNPConfig(num_items=12, neighbours=2)).eval()
    index = torch.tensor([[(i + 1) % 12, (i + 2) % 12] for i in range(12)])
    model.affinity.set_neighbours(index, torch.tensor([[0.8, 0.3]]).expand(12, -1))
    scorer = Scorer(model)
    state = scorer.encode_one([0, 1, 6], [1.0, 1.0, 0.0])
    # 2: 0.8 from 1, 0.3 from 0; 1 is a support item but 0 names it; 7 only from disliked 6
    assert scorer.because(state, targets=np.array([2, 1, 7, 10])) == [[1, 0], [0], [], []]
    assert scorer.because(state, targets=[2], limit=1) == [[1]]


def test_because_is_empty_without_a_neighbour_path(model: TaNP) -> None:
    scorer = Scorer(model)
    assert scorer.because(scorer.encode_one([1, 2], [1.0, 1.0]), targets=[3, 4]) == [[], []]
