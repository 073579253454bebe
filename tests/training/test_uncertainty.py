"""The uncertainty measures: shrinking with evidence, rank correlation with NDCG@5, the
within-top AUC, and the API's score spread as the measured uncertainty."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr

from tanp.config import TaNPConfig
from tanp.model import TaNP
from tanp.scoring import Scorer
from training.baselines import Baselines
from training.cold_start import MODEL, cold_start_curve
from training.data import load_interactions
from training.episodes import EpisodeSet, Prepared, random_split
from training.evaluate import support_state
from training.uncertainty import (
    UncertaintyMeasures,
    confident_hit_auc,
    measure_uncertainty,
    score_spread,
    shrink_fraction,
    spearman,
    top_hits,
)


@pytest.fixture(scope="module")
def prepared(synthetic_csv: Path) -> Prepared:
    return random_split(load_interactions(synthetic_csv), seed=5)


def test_shrink_fraction_counts_users_whose_uncertainty_fell() -> None:
    first = np.array([1.0, 1.0, 1.0, 1.0, np.nan])
    last = np.array([0.5, 2.0, 1.0, 0.1, 0.0])
    assert shrink_fraction(first, last) == pytest.approx(0.5)


def test_spearman_matches_scipy_with_ties_and_is_nan_when_constant() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(0, 5, size=40).astype(float)
    b = a + rng.normal(size=40)
    assert spearman(a, b) == pytest.approx(spearmanr(a, b).statistic)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert np.isnan(spearman(np.ones(5), np.arange(5.0)))
    with_nan = np.array([1.0, 2.0, np.nan, 4.0])
    assert spearman(with_nan, np.array([1.0, 2.0, 0.0, 3.0])) == pytest.approx(1.0)


def test_confident_hit_auc_per_user() -> None:
    uncertainty = np.array([[0.1, 0.2, 0.3], [0.3, 0.2, 0.1], [0.1, 0.1, 0.1], [0.1, 0.2, 0.3]])
    hits = np.array([[1, 0, 0], [1, 0, 0], [1, 0, 0], [1, 1, 1]], dtype=bool)
    values = confident_hit_auc(uncertainty, hits)
    assert values[:3] == pytest.approx([1.0, 0.0, 0.5])
    assert np.isnan(values[3])


def test_the_measures_read_the_callable_on_the_cut_users(prepared: Prepared) -> None:
    baselines = Baselines(prepared)
    threshold = prepared.interactions.positive_threshold
    curve = cold_start_curve(
        prepared,
        model_scorers={MODEL: lambda episodes: baselines.item_knn(episodes, shrink=5.0)},
        baselines=None,
        sizes=(1, 5, 20),
    )

    def evidence(episodes: EpisodeSet, items: np.ndarray) -> np.ndarray:
        # the fewer support points, the larger; hits a little more confident than misses
        hits = top_hits(items, episodes, threshold=threshold)
        return 1.0 / episodes.support_len[:, None] - 0.01 * hits

    measures = measure_uncertainty(curve, evidence, threshold=threshold)
    section = measures.to_dict()
    assert section["shrink_fraction"]["value"] == 1.0
    defined = [section["hit_auc"][str(size)] for size in (1, 5, 20)]
    assert defined == pytest.approx([1.0, 1.0, 1.0])
    for size in (1, 5, 20):
        np.testing.assert_array_equal(measures.ndcg[size], curve.per_user[MODEL][size]["NDCG@5"])
    again = UncertaintyMeasures.from_arrays({**curve.arrays(), **measures.arrays()})
    assert again is not None and again.sizes == (1, 5, 20)
    pooled = UncertaintyMeasures.pooled([measures, again])
    assert pooled.user[5].shape == (2 * len(prepared.episodes["test"]),)
    assert pooled.to_dict()["shrink_fraction"]["value"] == 1.0


def test_score_spread_is_the_std_of_scores_over_draws_of_z(prepared: Prepared) -> None:
    torch.manual_seed(0)
    model = TaNP(TaNPConfig(num_items=len(prepared.interactions.item_ids))).eval()
    episodes = prepared.episodes["test"]
    items = np.tile(np.arange(6), (len(episodes), 1))
    spread = score_spread(model, samples=8, seed=3)(episodes, items)
    assert spread.shape == items.shape and (spread >= 0).all()
    scorer = Scorer(model)
    generator = torch.Generator().manual_seed(3)
    drawn = scorer.sampled_scores(
        support_state(scorer, episodes),
        samples=8,
        candidates=torch.from_numpy(items),
        generator=generator,
    )
    np.testing.assert_allclose(spread, drawn.std(dim=0, correction=0).numpy(), rtol=1e-5)
