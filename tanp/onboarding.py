"""Which artists to ask a new listener about next: recognisable and informative, not redundant.

`next_questions` scores a pool of the most familiar items by the chance the listener knows each
one times what an answer would teach (like probability, its entropy, the expected shrinkage of
z's spread and the expected change of the current top items' scores), then picks greedily with
a discount for items similar to those already chosen. Knows nothing about serving or training.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch

from tanp.scoring import Scorer, rank

POOL = 100  # the most familiar items considered: an unknown artist teaches nothing
REFERENCE = 50  # the current top items whose expected score change is measured


class NonFiniteScoresError(ValueError):
    """The model scored NaN or infinity while choosing questions."""


@dataclass(frozen=True)
class QuestionWeights:
    """How much each part of an item's value counts; the defaults were chosen on validation
    users by `bench/onboarding.py --tune` (README, Onboarding). score: predicted like
    probability; entropy: of that probability, in bits; shrinkage: expected shrinkage of z's
    variance, change: expected mean absolute change of the current top items' scores, each
    divided by the pool's largest; redundancy: subtracted per unit of neighbour similarity to
    an item already chosen."""

    score: float = 1.0
    entropy: float = 3.0
    shrinkage: float = 0.0
    change: float = 1.0
    redundancy: float = 16.0


DEFAULT_WEIGHTS = QuestionWeights()


def familiarity_from_popularity(popularity: np.ndarray) -> np.ndarray:
    """P(a listener knows each item), read from train positive counts: count / largest count."""
    counts = np.asarray(popularity, dtype=np.float64).clip(min=0.0)
    top = counts.max() if counts.size else 0.0
    return counts / top if top > 0 else np.ones_like(counts)


def binary_entropy(probability: np.ndarray) -> np.ndarray:
    """H(p) in bits: 1 at p = 0.5, 0 at p = 0 or 1."""
    p = np.clip(probability, 1e-12, 1 - 1e-12)
    return -(p * np.log2(p) + (1 - p) * np.log2(1 - p))


def next_questions(
    scorer: Scorer,
    *,
    support_items: Sequence[int],
    support_labels: Sequence[float],
    k: int,
    exclude: Sequence[int] = (),
    familiarity: np.ndarray | None = None,
    weights: QuestionWeights = DEFAULT_WEIGHTS,
    pool: int = POOL,
    reference: int = REFERENCE,
) -> list[int]:
    """The k item indices to ask about next, best first, never a support or excluded item.

    familiarity (N,): P(the listener knows each item), default `familiarity_from_popularity` of
    the model's train counts. Raises NonFiniteScoresError when the model scores NaN or inf.
    """
    config = scorer.config
    items, labels = [int(item) for item in support_items], [float(x) for x in support_labels]
    if familiarity is None:
        familiarity = familiarity_from_popularity(
            scorer.model.item_popularity.detach().to("cpu", torch.float64).numpy()
        )
    known = np.asarray(familiarity, dtype=np.float64)
    excluded = np.asarray(sorted(set(items) | {int(item) for item in exclude}), dtype=np.int64)
    candidates = rank(known, k=pool, exclude=excluded)  # (P,) most familiar first
    if k <= 0 or candidates.size == 0:
        return []
    state = scorer.encode_one(items, labels)
    scores = _finite(scorer.scores(state)[0])  # (N,)
    top = rank(scores, k=reference, exclude=excluded)  # (R,)
    answers = (config.label_max, config.label_min)  # liked, not liked
    hypothetical = scorer.encode_many(
        [([*items, int(item)], [*labels, answer]) for answer in answers for item in candidates]
    )  # 2P tasks: every candidate liked, then every candidate not liked
    references = torch.as_tensor(top, device=scorer.device).expand(2 * candidates.size, -1)
    after = _finite(scorer.scores(hypothetical, candidates=references))  # (2P, R)
    change = np.abs(after - scores[top]).mean(axis=1).reshape(2, -1)  # (2, P)
    spread = _finite(hypothetical.prior.logvar.exp().sum(-1)).reshape(2, -1)  # (2, P)
    now = float(_finite(state.prior.logvar.exp().sum(-1))[0])
    like = 1.0 / (1.0 + np.exp(-scores[candidates]))  # the score read as a logit
    expected_change = like * change[0] + (1 - like) * change[1]
    shrinkage = now - (like * spread[0] + (1 - like) * spread[1])
    value = known[candidates] * (
        weights.score * like
        + weights.entropy * binary_entropy(like)
        + weights.shrinkage * _scaled(shrinkage)
        + weights.change * _scaled(expected_change)
    )
    return _greedy(scorer, candidates=candidates, value=value, k=k, weights=weights)


def _greedy(
    scorer: Scorer, *, candidates: np.ndarray, value: np.ndarray, k: int, weights: QuestionWeights
) -> list[int]:
    """Pick the best value, discounted by the largest similarity (either direction) to any
    item already picked; ties go to the more familiar item."""
    pool = torch.as_tensor(candidates, device=scorer.device)
    similarity = scorer.model.affinity.similarity(sources=pool, targets=pool).cpu().numpy()
    similarity = np.maximum(similarity, similarity.T)  # (P, P)
    closest = np.zeros(candidates.size)
    available = np.ones(candidates.size, dtype=bool)
    chosen: list[int] = []
    for _ in range(min(k, candidates.size)):
        discounted = np.where(available, value - weights.redundancy * closest, -np.inf)
        best = int(np.argmax(discounted))
        chosen.append(int(candidates[best]))
        available[best] = False
        closest = np.maximum(closest, similarity[best])
    return chosen


def _finite(values: torch.Tensor) -> np.ndarray:
    array = values.detach().to("cpu", torch.float64).numpy()
    if not np.isfinite(array).all():
        raise NonFiniteScoresError("the model scored NaN or infinity while choosing questions")
    return array


def _scaled(values: np.ndarray) -> np.ndarray:
    """values / their largest magnitude (all zeros stay zeros)."""
    largest = float(np.abs(values).max()) if values.size else 0.0
    return values / largest if largest > 0 else values
