"""Paired comparisons: the selection score, and the bootstrap interval of a difference."""

from __future__ import annotations

import numpy as np
import pytest

from training.compare import paired_difference, selection_score


def test_selection_score_adds_the_means_and_skips_users_without_positives() -> None:
    per_user = {"NDCG@5": np.array([1.0, 0.5]), "Recall@20": np.array([0.2, np.nan])}
    assert selection_score(per_user) == pytest.approx(0.75 + 0.2)


def test_a_constant_difference_has_a_zero_width_interval_and_a_verdict() -> None:
    better = paired_difference([np.array([0.6, 0.7, 0.8])], [np.array([0.5, 0.6, 0.7])])
    assert better.mean == pytest.approx(0.1) and better.users == 3
    assert better.low == pytest.approx(0.1) and better.high == pytest.approx(0.1)
    assert better.verdict == "better"
    tie = paired_difference([np.array([1.0, 0.0])], [np.array([0.0, 1.0])])
    assert tie.low < 0 < tie.high and tie.verdict == "tie"
