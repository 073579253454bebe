"""Validation scores: the candidate-stage path scores exactly what the full path scores on the
items it keeps, and keeps every query item."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from training.config import preset_configs
from training.data import load_interactions
from training.episodes import random_split
from training.evaluate import tanp_scores
from training.trainer import build_untrained
from training.validation import candidate_scores


def test_candidate_scores_equal_the_full_scores_on_the_query_and_candidate_items(
    synthetic_csv: Path,
) -> None:
    prepared = random_split(load_interactions(synthetic_csv), seed=1)
    model_config, train = preset_configs("paper", model={"neighbours": 5})
    model, _ = build_untrained(prepared, model_config, train)
    episodes = prepared.episodes["valid"]
    full = tanp_scores(model, episodes)
    kept = candidate_scores(model, episodes, count=10)
    assert kept.shape == full.shape
    for episode in range(len(episodes)):
        scored = np.isfinite(kept[episode])
        assert scored[episodes.query(episode)[0]].all()
        assert 10 <= scored.sum() <= 10 + episodes.query_len[episode]
        np.testing.assert_allclose(kept[episode, scored], full[episode, scored], rtol=1e-5)
