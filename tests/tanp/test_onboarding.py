"""next_questions: never a support or excluded item, familiar first, redundancy discounted,
non-finite scores refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tanp.config import TaNPConfig
from tanp.model import TaNP
from tanp.onboarding import (
    NonFiniteScoresError,
    QuestionWeights,
    binary_entropy,
    familiarity_from_popularity,
    next_questions,
)
from tanp.scoring import Scorer

ITEMS = 40


@pytest.fixture
def scorer() -> Scorer:
    torch.manual_seed(0)
    model = TaNP(TaNPConfig(num_items=ITEMS, neighbours=3)).eval()
    model.item_popularity.copy_(torch.arange(ITEMS, 0, -1, dtype=torch.float32))
    # item i's neighbours are i+1, i+2, i+3
    index = torch.tensor(
        [[(i + 1) % ITEMS, (i + 2) % ITEMS, (i + 3) % ITEMS] for i in range(ITEMS)]
    )
    model.affinity.set_neighbours(index, torch.tensor([[0.9, 0.5, 0.2]]).expand(ITEMS, -1))
    return Scorer(model)


def test_questions_are_distinct_and_never_rated_or_excluded(scorer: Scorer) -> None:
    asked = next_questions(
        scorer, support_items=[0, 5, 9], support_labels=[1.0, 0.0, 1.0], k=8, exclude=[1, 2]
    )
    assert len(asked) == len(set(asked)) == 8
    assert not set(asked) & {0, 5, 9, 1, 2}


def test_fewer_questions_when_the_pool_runs_out(scorer: Scorer) -> None:
    asked = next_questions(
        scorer, support_items=[], support_labels=[], k=5, exclude=list(range(37))
    )
    assert sorted(asked) == [37, 38, 39]
    everything = list(range(ITEMS))
    assert (
        next_questions(scorer, support_items=[], support_labels=[], k=5, exclude=everything) == []
    )


def test_an_item_nobody_knows_is_asked_last(scorer: Scorer) -> None:
    familiarity = np.ones(ITEMS)
    familiarity[3] = 0.0
    asked = next_questions(
        scorer,
        support_items=[],
        support_labels=[],
        k=ITEMS,
        familiarity=familiarity,
        weights=QuestionWeights(redundancy=0.0),
        pool=ITEMS,
    )
    assert asked[-1] == 3


def test_without_other_terms_the_most_familiar_come_first(scorer: Scorer) -> None:
    plain = QuestionWeights(score=0.0, entropy=0.0, shrinkage=0.0, change=0.0, redundancy=0.0)
    asked = next_questions(scorer, support_items=[7], support_labels=[1.0], k=4, weights=plain)
    assert asked == [0, 1, 2, 3]


def test_redundancy_keeps_neighbours_of_chosen_items_out(scorer: Scorer) -> None:
    plain = QuestionWeights(score=0.0, entropy=0.0, shrinkage=0.0, change=0.0, redundancy=1.0)
    familiarity = np.linspace(1.0, 0.9, ITEMS)
    asked = next_questions(
        scorer, support_items=[], support_labels=[], k=4, weights=plain, familiarity=familiarity
    )
    # 1, 2, 3 are 0's neighbours, 5, 6, 7 are 4's
    assert asked == [0, 4, 8, 12]


def test_non_finite_scores_raise(scorer: Scorer) -> None:
    with torch.no_grad():
        scorer.model.decoder.output.bias.fill_(float("nan"))
    broken = Scorer(scorer.model)
    with pytest.raises(NonFiniteScoresError, match="NaN"):
        next_questions(broken, support_items=[1], support_labels=[1.0], k=3)


def test_familiarity_and_entropy_helpers() -> None:
    np.testing.assert_allclose(familiarity_from_popularity(np.array([2.0, 4.0, 0.0])), [0.5, 1, 0])
    np.testing.assert_allclose(familiarity_from_popularity(np.zeros(2)), [1.0, 1.0])
    np.testing.assert_allclose(
        binary_entropy(np.array([0.5, 0.0, 1.0])), [1.0, 0.0, 0.0], atol=1e-9
    )
