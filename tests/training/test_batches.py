"""Training batches: the step draw follows the recipe, and the features-only baseline's draw is
pinned (a change to draw_step must not move that baseline's numbers unseen)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from training.batches import Profiles, draw_step, features_baseline_draws, training_profiles
from training.config import TrainConfig, preset_configs
from training.data import load_interactions
from training.episodes import Prepared, random_split
from training.trainer import build_untrained


@pytest.fixture(scope="module")
def prepared(synthetic_csv: Path) -> Prepared:
    return random_split(load_interactions(synthetic_csv), seed=1)


def test_episode_draw_follows_the_recipe(prepared: Prepared) -> None:
    model_config, train = preset_configs(
        "paper", train={"support_size": 6, "query_cap": 5, "negatives": 7, "folds": 0}
    )
    model, tables = build_untrained(prepared, model_config, train)
    profiles = training_profiles(prepared, train=train, fold_of_user=None, seen=[tables.seen])
    chosen = torch.arange(8)
    batch = draw_step(
        profiles,
        chosen,
        train=train,
        num_items=model.config.num_items,
        threshold=1.0,
        generator=torch.Generator().manual_seed(0),
        z_dim=0,
        affinity_dropout=0.0,
        unknown_user=None,
    )
    for row, index in enumerate(chosen.tolist()):
        length = int(profiles.lengths[index])
        points = dict(
            zip(
                profiles.items[index, :length].tolist(),
                profiles.labels[index, :length].tolist(),
                strict=True,
            )
        )
        support = batch.support_items[row][batch.support_mask[row]].tolist()
        query = batch.target_items[row][batch.target_mask[row]].tolist()
        assert len(support) == min(6, length // 2) and len(query) == min(5, length - len(support))
        assert not set(support) & set(query) and set(support) | set(query) <= set(points)
        labels = batch.target_labels[row][batch.target_mask[row]].tolist()
        assert labels == [points[item] for item in query]
        negatives = batch.target_items[row, batch.target_mask.shape[1] - 7 :]
        assert not batch.target_mask[row, -7:].any() and len(negatives) == 7
        # a support item is never a candidate; the positives are exactly the liked query points
        candidates = batch.target_items[row][batch.candidates[row]].tolist()
        assert not set(support) & set(candidates)
        assert batch.positive[row].sum() == sum(points[item] >= 1 for item in query)


def _three_profiles() -> Profiles:
    rows = [
        ([3, 5, 7, 9, 11, 13], [1, 0, 1, 1, 0, 1]),
        ([2, 4, 6, 8, 10], [0, 1, 1, 0, 1]),
        ([1, 12, 14, 15, 16, 17, 18], [1, 1, 0, 0, 1, 0, 1]),
    ]
    items, labels = torch.zeros(3, 7, dtype=torch.long), torch.zeros(3, 7)
    for row, (row_items, row_labels) in enumerate(rows):
        items[row, : len(row_items)] = torch.tensor(row_items)
        labels[row, : len(row_labels)] = torch.tensor(row_labels, dtype=torch.float32)
    return Profiles(
        items=items,
        labels=labels,
        lengths=torch.tensor([6, 5, 7]),
        users=torch.tensor([0, 1, 2]),
        folds=torch.tensor([0, 1, 0]),
    )


def test_the_features_baseline_draw_is_pinned() -> None:
    """What main's trainer drew for the baseline before issue 23 (same seed, same profiles):
    if this fails, the features-only baseline's numbers changed too."""
    draws = features_baseline_draws(
        _three_profiles(),
        folds=2,
        train=TrainConfig(support_size=2, query_cap=3, negatives=2),
        num_items=20,
        threshold=1.0,
        seed=11,
    )
    seen = []
    for fold, batch in draws:
        assert batch.noise.shape[1] == 0 and bool(batch.affinity_keep.all())
        for row in range(batch.support_items.shape[0]):
            seen.append(
                (
                    fold,
                    batch.support_items[row][batch.support_mask[row]].tolist(),
                    batch.target_items[row][batch.target_mask[row]].tolist(),
                    batch.target_items[row, -2:].tolist(),  # the uniform negatives
                    batch.target_items[row][batch.positive[row]].tolist(),
                )
            )
    # (fold, support, labelled targets, negatives, positives), episodes in draw order
    assert seen == [
        (0, [3, 9], [5, 11, 13], [4, 5], [13]),
        (0, [1, 15], [17, 18, 12], [8, 5], [18, 12]),
        (1, [8, 4], [6, 10, 2], [13, 1], [6, 10]),
    ]
