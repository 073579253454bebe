"""Evaluation: test scores come from the support sets alone; the adaptation ablations replace z
and the task state only."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from tanp.config import TaNPConfig
from tanp.model import TaNP
from tanp.scoring import Scorer
from training.data import load_interactions
from training.episodes import random_split
from training.evaluate import edited_task, support_state, tanp_scores


def test_test_scores_never_read_query_labels(synthetic_csv: Path) -> None:
    prepared = random_split(load_interactions(synthetic_csv), seed=5)
    episodes = prepared.episodes["test"]
    model = TaNP(TaNPConfig(num_items=len(prepared.interactions.item_ids))).eval()
    before = tanp_scores(model, episodes)
    episodes.query_labels[:] = 1.0 - episodes.query_labels
    episodes.query_items[:] = 0
    assert np.array_equal(before, tanp_scores(model, episodes))


def test_the_ablations_replace_z_and_the_task_state_and_keep_the_support(
    synthetic_csv: Path,
) -> None:
    prepared = random_split(load_interactions(synthetic_csv), seed=5)
    model = TaNP(TaNPConfig(num_items=len(prepared.interactions.item_ids))).eval()
    state = support_state(Scorer(model), prepared.episodes["test"])
    mean = edited_task(state, "mean_task")
    shuffled = edited_task(state, "shuffled_task")
    torch.testing.assert_close(mean.prior.mu, state.prior.mu.mean(0).expand_as(state.prior.mu))
    torch.testing.assert_close(mean.task, state.task.mean(0).expand_as(state.task))
    torch.testing.assert_close(shuffled.assignment, state.assignment.roll(1, dims=0))
    for edited in (mean, shuffled):
        assert edited.support_items is state.support_items
        assert edited.support_labels is state.support_labels
