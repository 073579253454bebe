"""Baselines: the kNN + log-popularity blend, RP3beta against a dense hand computation, and the
tuning over (validation, test) pairs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.baselines import Baselines, Setting, TuningPair
from training.data import load_interactions
from training.episodes import EpisodeSet, Prepared, random_split
from training.item_stats import positive_matrix


@pytest.fixture(scope="module")
def prepared(synthetic_csv: Path) -> Prepared:
    return random_split(load_interactions(synthetic_csv), seed=5)


def test_rp3beta_is_the_powered_two_step_walk(prepared: Prepared) -> None:
    baselines = Baselines(prepared)
    episodes = prepared.episodes["test"]
    alpha, beta = 0.75, 0.4
    matrix = positive_matrix(prepared).toarray().astype(np.float64)  # (users, items)
    user_degree = np.maximum(matrix.sum(axis=1), 1.0)
    item_degree = np.maximum(matrix.sum(axis=0), 1.0)
    walk = (matrix.T * user_degree**-alpha) @ matrix  # (items, items)
    walk = walk / item_degree[:, None] ** alpha / item_degree[None, :] ** beta
    np.fill_diagonal(walk, 0.0)
    expected = np.zeros((len(episodes), walk.shape[0]))
    for episode in range(len(episodes)):
        items, labels = episodes.support(episode)
        expected[episode] = walk[items[labels >= 0.5]].sum(axis=0)
    scores = baselines.rp3beta(episodes, alpha=alpha, beta=beta)
    np.testing.assert_allclose(scores, expected, rtol=1e-5, atol=1e-6)


def test_the_blend_adds_scaled_log_popularity_to_the_scaled_knn(prepared: Prepared) -> None:
    baselines = Baselines(prepared)
    episodes = prepared.episodes["test"]
    knn = baselines.item_knn(episodes, shrink=10.0)
    plain = baselines.knn_pop(episodes, shrink=10.0, weight=0.0)
    assert plain.max(axis=1) == pytest.approx(np.ones(len(episodes)))
    for episode in range(len(episodes)):
        assert np.array_equal(np.argsort(-knn[episode]), np.argsort(-plain[episode]))
    log_popularity = np.log1p(baselines.counts) / np.log1p(baselines.counts.max())
    blended = baselines.knn_pop(episodes, shrink=10.0, weight=0.3)
    np.testing.assert_allclose(
        blended - plain, 0.3 * np.tile(log_popularity, (len(episodes), 1)), atol=1e-6
    )


def test_tune_chooses_per_pair_on_validation_and_scores_test_once(prepared: Prepared) -> None:
    baselines = Baselines(prepared)
    valid, test = prepared.episodes["valid"], prepared.episodes["test"]
    # the second pair: the same validation users under another identity (a copy)
    copied_valid = EpisodeSet(**{**vars(valid), "support_items": valid.support_items.copy()})
    pairs = [TuningPair(valid, test), TuningPair(copied_valid, test)]
    calls: list[tuple[int, float]] = []

    def scorer(episodes: EpisodeSet, setting: Setting) -> np.ndarray:
        calls.append((id(episodes), setting["good_for"]))
        knn = baselines.item_knn(episodes, shrink=10.0)
        # the setting named for this pair's validation users ranks well, the other one badly
        good = (setting["good_for"] == 0) == (episodes is valid)
        return knn if good or episodes is test else -knn

    tuned = baselines.tune("probe", [{"good_for": 0.0}, {"good_for": 1.0}], scorer, pairs)
    assert [result.setting for result in tuned] == [{"good_for": 0.0}, {"good_for": 1.0}]
    test_calls = [setting for identity, setting in calls if identity == id(test)]
    assert sorted(test_calls) == [0.0, 1.0]
    assert len(calls) == 2 * 2 + 2
    for result in tuned:
        assert result.test_scores.shape == (len(test), baselines.items)


def test_all_tuned_names_every_baseline_with_its_setting(prepared: Prepared) -> None:
    tuned = {result.name: result for result in Baselines(prepared).all_tuned()}
    assert set(tuned) == {"popularity", "item_knn", "ease", "knn_pop", "rp3beta"}
    assert set(tuned["knn_pop"].setting) == {"shrink", "weight"}
    assert set(tuned["rp3beta"].setting) == {"alpha", "beta"}
    assert set(tuned["ease"].setting) == {"lambda"}
