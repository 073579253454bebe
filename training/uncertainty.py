"""Does the model's uncertainty mean something (issue 22 item 3)? On the cold-start curve's cut test
users: (a) the share of users whose uncertainty shrinks from the smallest support to the largest,
(b) the Spearman correlation of a user's uncertainty with the user's NDCG@5, (c) within each
user's top 20, the AUC of "more confident" for "is a hit". The uncertainty itself comes in as a
callable; `score_spread` is the one the API serves today. Formulas: docs/training.md.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from scipy.stats import rankdata

from tanp.model import TaNP
from tanp.scoring import Scorer
from training.cold_start import MODEL, ColdStartCurve
from training.episodes import EpisodeSet
from training.evaluate import support_state
from training.metrics import auc

# (episodes, (E, K) item indices) -> (E, K) uncertainty of each item for its episode's user
ItemUncertainty = Callable[[EpisodeSet, np.ndarray], np.ndarray]
SHRINK_TARGET = 0.8
SPEARMAN_TARGET = -0.3
AUC_TARGET = 0.6


def score_spread(
    model: TaNP, *, samples: int = 16, seed: int = 0, batch: int = 64
) -> ItemUncertainty:
    """The API's `uncertainty` (app.serving.ranking.score_spread): the standard deviation of an
    item's score over `samples` draws of z ~ q(z | support)."""
    scorer = Scorer(model)

    def spread(episodes: EpisodeSet, items: np.ndarray) -> np.ndarray:
        state = support_state(scorer, episodes)
        generator = torch.Generator(device=scorer.device).manual_seed(seed)
        parts = []
        for start in range(0, len(episodes), batch):
            rows = slice(start, start + batch)
            drawn = scorer.sampled_scores(
                state.rows(rows),
                samples=samples,
                candidates=torch.from_numpy(items[rows]),
                generator=generator,
            )  # (S, B, K)
            parts.append(drawn.std(dim=0, correction=0).float().cpu().numpy())
        return np.concatenate(parts) if parts else np.zeros(items.shape, np.float32)

    return spread


def shrink_fraction(first: np.ndarray, last: np.ndarray) -> float:
    """Share of users whose uncertainty at the largest support (`last`, (E,)) is below the one
    at the smallest (`first`); NaN users dropped."""
    keep = ~(np.isnan(first) | np.isnan(last))
    return float((last[keep] < first[keep]).mean()) if keep.any() else float("nan")


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rho: the Pearson correlation of the average ranks (ties share their mean
    rank); NaN pairs dropped; NaN when either side is constant."""
    keep = ~(np.isnan(a) | np.isnan(b))
    ranks_a, ranks_b = rankdata(a[keep]), rankdata(b[keep])
    if keep.sum() < 2 or ranks_a.std() == 0 or ranks_b.std() == 0:
        return float("nan")
    return float(np.corrcoef(ranks_a, ranks_b)[0, 1])


def top_hits(top: np.ndarray, episodes: EpisodeSet, *, threshold: float) -> np.ndarray:
    """(E, K) bool: whether each top item is one of its user's query positives."""
    hits = np.zeros(top.shape, dtype=bool)
    for episode in range(len(episodes)):
        items, labels = episodes.query(episode)
        hits[episode] = np.isin(top[episode], items[labels >= threshold])
    return hits


def confident_hit_auc(uncertainty: np.ndarray, hits: np.ndarray) -> np.ndarray:
    """(E,) per user, within its top K: P(a hit is less uncertain than a miss), ties 1/2;
    NaN for a user whose top holds only hits or only misses."""
    return np.array(
        [
            np.nan if (value := auc(-uncertainty[row], hits[row])) is None else value
            for row in range(uncertainty.shape[0])
        ]
    )


@dataclass(frozen=True)
class UncertaintyMeasures:
    """Per support size and per user: the uncertainty (mean over the user's top K), the
    user's NDCG@5 and its within-top AUC. Several (splits, seeds) pool by concatenation."""

    sizes: tuple[int, ...]
    user: dict[int, np.ndarray]
    ndcg: dict[int, np.ndarray]
    hit_auc: dict[int, np.ndarray]

    def to_dict(self) -> dict[str, Any]:
        """metrics.json's `uncertainty` (and the bench's pooled rows)."""
        first, last = self.sizes[0], self.sizes[-1]
        every = list(self.sizes)
        pooled_rho = spearman(
            np.concatenate([self.user[size] for size in every]),
            np.concatenate([self.ndcg[size] for size in every]),
        )
        return {
            "sizes": every,
            "mean": {str(size): float(np.nanmean(self.user[size])) for size in every},
            "shrink_fraction": {
                "from": first,
                "to": last,
                "value": shrink_fraction(self.user[first], self.user[last]),
                "target": SHRINK_TARGET,
            },
            "spearman_ndcg5": {
                **{str(size): spearman(self.user[size], self.ndcg[size]) for size in every},
                "all_sizes": pooled_rho,
                "target": SPEARMAN_TARGET,
            },
            "hit_auc": {
                **{str(size): _nanmean(self.hit_auc[size]) for size in every},
                "target": AUC_TARGET,
            },
        }

    def arrays(self) -> dict[str, np.ndarray]:
        """`uncertainty/{size}/user` and `uncertainty/{size}/hit_auc` (per_user.npz); NDCG@5
        is the curve's `cold_start/{size}/tanp/NDCG@5`."""
        return {
            **{f"uncertainty/{size}/user": values for size, values in self.user.items()},
            **{f"uncertainty/{size}/hit_auc": values for size, values in self.hit_auc.items()},
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> UncertaintyMeasures | None:
        sizes = sorted(
            int(key.split("/")[1])
            for key in arrays
            if key.startswith("uncertainty/") and key.endswith("/user")
        )
        if not sizes:
            return None
        return cls(
            tuple(sizes),
            {size: arrays[f"uncertainty/{size}/user"] for size in sizes},
            {size: arrays[f"cold_start/{size}/{MODEL}/NDCG@5"] for size in sizes},
            {size: arrays[f"uncertainty/{size}/hit_auc"] for size in sizes},
        )

    @classmethod
    def pooled(cls, parts: Sequence[UncertaintyMeasures]) -> UncertaintyMeasures:
        """Users of several runs side by side (sizes: those every part has)."""
        sizes = tuple(size for size in parts[0].sizes if all(size in part.user for part in parts))
        return cls(
            sizes,
            {size: np.concatenate([part.user[size] for part in parts]) for size in sizes},
            {size: np.concatenate([part.ndcg[size] for part in parts]) for size in sizes},
            {size: np.concatenate([part.hit_auc[size] for part in parts]) for size in sizes},
        )


def _nanmean(values: np.ndarray) -> float:
    return float(np.nanmean(values)) if (~np.isnan(values)).any() else float("nan")


def measure_uncertainty(
    curve: ColdStartCurve, uncertainty: ItemUncertainty, *, threshold: float
) -> UncertaintyMeasures:
    """The three measures on the curve's cut test users and the model's top items."""
    user, ndcg, hit_auc = {}, {}, {}
    for size in curve.sizes:
        cut, top = curve.cuts[size], curve.top[size]
        values = uncertainty(cut, top)
        user[size] = values.mean(axis=1)
        ndcg[size] = curve.per_user[MODEL][size]["NDCG@5"]
        hit_auc[size] = confident_hit_auc(values, top_hits(top, cut, threshold=threshold))
    return UncertaintyMeasures(curve.sizes, user, ndcg, hit_auc)
