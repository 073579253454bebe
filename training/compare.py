"""Paired comparisons of two scorers on the same users: per-user headline metrics, the selection
score, and the percentile bootstrap of a difference, pooled over splits (SPEC section 4).
Knows only arrays of per-user values, not models.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass

import numpy as np

from tanp.scoring import rank
from training.episodes import EpisodeSet
from training.metrics import catalog_metrics, paper_ndcg

HEADLINE = ("NDCG@5", "Recall@20")
RESAMPLES = 2000
BOOTSTRAP_SEED = 2021


def per_user_headline(
    episodes: EpisodeSet,
    scores: np.ndarray,
    *,
    threshold: float,
    known: EpisodeSet | None = None,
) -> dict[str, np.ndarray]:
    """(E,) arrays, one value per test user: within-query NDCG@5 (the paper's, = standard for
    0/1 labels) and catalog Recall@20 (NaN for a user without query positives). The catalog
    ranking leaves out the support items of `known` (default `episodes`): a cut support set
    (training.cold_start) keeps its hidden items out of the ranking, so every cut ranks the
    same items against the same query."""
    known = episodes if known is None else known
    ndcg = np.zeros(len(episodes))
    recall = np.full(len(episodes), np.nan)
    for episode in range(len(episodes)):
        query_items, query_labels = episodes.query(episode)
        support_items, _ = known.support(episode)
        ndcg[episode] = paper_ndcg(
            rank(scores[episode, query_items]).tolist(), query_labels.tolist(), k=5
        )
        relevant = query_labels >= threshold
        if relevant.any():
            ranked = rank(scores[episode], k=20, exclude=support_items)
            recall[episode] = catalog_metrics(ranked, set(query_items[relevant].tolist()))[
                "Recall@20"
            ]
    return {"NDCG@5": ndcg, "Recall@20": recall}


def selection_score(per_user: dict[str, np.ndarray]) -> float:
    """What every model epoch and baseline setting is chosen on (validation users): the mean
    NDCG@5 + the mean catalog Recall@20."""
    return float(np.nanmean(per_user["NDCG@5"]) + np.nanmean(per_user["Recall@20"]))


@dataclass(frozen=True)
class Difference:
    """Mean of (a - b) over users and its percentile bootstrap 95 % interval."""

    mean: float
    low: float
    high: float
    users: int

    @property
    def verdict(self) -> str:
        """'better' / 'worse' when the interval excludes 0, else 'tie'."""
        if self.low > 0:
            return "better"
        if self.high < 0:
            return "worse"
        return "tie"

    def to_dict(self) -> dict[str, float | int | str]:
        return {**asdict(self), "verdict": self.verdict}

    def __str__(self) -> str:
        return f"{self.mean:+.3f} [{self.low:+.3f}, {self.high:+.3f}]"


def paired_difference(
    a: Sequence[np.ndarray],
    b: Sequence[np.ndarray],
    *,
    resamples: int = RESAMPLES,
    seed: int = BOOTSTRAP_SEED,
) -> Difference:
    """Per-user values of two scorers, one array per split (users aligned; NaN = undefined for
    that user, dropped in both) -> mean difference and its 95 % interval.

    Each bootstrap draw resamples the users of every split with replacement and averages the
    differences over all drawn users (pooled over splits when several are given)."""
    if len(a) != len(b):
        raise ValueError("a and b need one array per split each")
    differences = []
    for values_a, values_b in zip(a, b, strict=True):
        if values_a.shape != values_b.shape:
            raise ValueError("per-user arrays of one split must be aligned")
        difference = np.asarray(values_a, dtype=np.float64) - np.asarray(values_b, np.float64)
        differences.append(difference[~np.isnan(difference)])
    users = sum(part.size for part in differences)
    if users == 0:
        return Difference(float("nan"), float("nan"), float("nan"), 0)
    rng = np.random.default_rng(seed)
    totals = np.zeros(resamples)
    for part in differences:
        if part.size:
            drawn = rng.integers(0, part.size, size=(resamples, part.size))
            totals += part[drawn].sum(axis=1)
    means = totals / users
    mean = float(np.concatenate(differences).mean())
    low, high = np.percentile(means, [2.5, 97.5])
    return Difference(mean, float(low), float(high), users)
