"""The one rule for liked: thresholds on 0/1 and 1-5 scales, the affinity's liked share, and the
scorer's candidate stage reading the same rule."""

from __future__ import annotations

import pytest
import torch

from tanp.config import TaNPConfig
from tanp.labels import liked_share, liked_threshold
from tanp.model import TaNP
from tanp.scoring import Scorer


def test_liked_threshold_is_the_top_of_a_binary_scale_and_three_quarters_up_any_other() -> None:
    assert liked_threshold(0.0, 1.0) == 1.0
    assert liked_threshold(1.0, 5.0) == 4.0
    assert liked_threshold(0.0, 10.0) == pytest.approx(7.5)


def test_liked_share_is_the_place_on_the_scale_and_the_rule_itself_on_0_1() -> None:
    scale = torch.tensor([1.0, 2.0, 4.0, 5.0, 7.0])
    torch.testing.assert_close(
        liked_share(scale, label_min=1.0, label_max=5.0), torch.tensor([0.0, 0.25, 0.75, 1, 1])
    )
    binary = torch.tensor([0.0, 1.0, 1.0, 0.0])
    torch.testing.assert_close(
        liked_share(binary, label_min=0.0, label_max=1.0),
        (binary >= liked_threshold(0.0, 1.0)).float(),
    )


@pytest.mark.parametrize(
    ("rating", "liked"), [(5.0, True), (4.0, True), (3.5, False), (3.0, False)]
)
def test_the_candidate_stage_follows_the_neighbours_of_liked_support_items_only(
    rating: float, liked: bool
) -> None:
    torch.manual_seed(0)
    model = TaNP(TaNPConfig(num_items=20, neighbours=2, label_min=1.0, label_max=5.0)).eval()
    model.affinity.set_neighbours(
        torch.tensor([[(item + 7) % 20, (item + 9) % 20] for item in range(20)]),
        torch.full((20, 2), 0.5),
    )
    model.item_popularity.copy_(torch.arange(20, 0, -1, dtype=torch.float32))  # item 0 first
    scorer = Scorer(model)
    chosen = scorer.candidates(scorer.encode_one([3], [rating]), count=4)[0].tolist()
    # item 3's neighbours, 10 and 12, lead when item 3 is liked; else the popular items do
    assert (chosen[:2] == [10, 12]) == liked
