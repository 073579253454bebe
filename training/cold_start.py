"""The cold-start curve (SPEC section 4, issue 22): every evaluation user's support cut to its first
n points (at least one liked kept), the query unchanged; NDCG@5 and catalog Recall@20 at each n
for the model, its `mean_task` ablation and every baseline re-tuned on validation users cut the
same way. Knows episodes, score matrices and per-user values; the model comes in as a scorer.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tanp.scoring import rank
from training.baselines import Baselines, BaselineSpec, TuningPair
from training.compare import HEADLINE, paired_difference, per_user_headline
from training.episodes import EpisodeSet, Prepared

SUPPORT_SIZES = (1, 3, 5, 10, 20)
MODEL = "tanp"  # the model's key among the curve's scorers; its ablations go by their edit
TOP = 20  # the ranking whose items the uncertainty measures look at (training.uncertainty)

# (episodes of a cut) -> (E, items) scores of the model, with or without an adaptation ablation
ModelScorer = Callable[[EpisodeSet], np.ndarray]


def cut_support(episodes: EpisodeSet, *, size: int, threshold: float) -> EpisodeSet:
    """Each support set cut to its first `size` points; when none of them is liked and the
    support holds a liked point, the last kept point gives way to the first liked one (which
    then closes the cut). Queries are left as they are; a support shorter than `size` stays
    whole."""
    if size < 1:
        raise ValueError("a cut keeps at least one support point")
    supports = []
    for episode in range(len(episodes)):
        items, labels = episodes.support(episode)
        keep = np.arange(min(size, items.size))
        liked = np.flatnonzero(labels >= threshold)
        if keep.size and liked.size and not (labels[keep] >= threshold).any():
            keep = np.append(keep[:-1], liked[0])
        supports.append((items[keep], labels[keep]))
    queries = [episodes.query(episode) for episode in range(len(episodes))]
    return EpisodeSet.from_lists(users=episodes.users.tolist(), supports=supports, queries=queries)


def top_items(scores: np.ndarray, known: EpisodeSet, *, k: int = TOP) -> np.ndarray:
    """(E, k) each user's catalog top k (best first) without the items of `known`'s supports:
    what the service would show."""
    top = np.zeros((scores.shape[0], k), dtype=np.int64)
    for episode in range(scores.shape[0]):
        top[episode] = rank(scores[episode], k=k, exclude=known.support(episode)[0])
    return top


@dataclass(frozen=True)
class ColdStartCurve:
    """Per-user NDCG@5 / Recall@20 of every scorer at every support size (scorer -> size ->
    metric -> (E,)), the baselines' chosen settings, and for the model (`MODEL`) the cut test
    episodes and each user's top items at every size (for training.uncertainty)."""

    sizes: tuple[int, ...]
    per_user: dict[str, dict[int, dict[str, np.ndarray]]]
    settings: dict[str, dict[int, dict[str, float]]] = field(default_factory=dict)
    cuts: dict[int, EpisodeSet] = field(default_factory=dict)
    top: dict[int, np.ndarray] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """metrics.json's `cold_start`: per scorer and size the means (and a baseline's
        setting), and the paired difference model - scorer with its 95 % interval."""
        scorers: dict[str, Any] = {}
        differences: dict[str, Any] = {}
        model = self.per_user[MODEL]
        for name, by_size in self.per_user.items():
            scorers[name] = {
                str(size): {
                    **{key: float(np.nanmean(values[key])) for key in HEADLINE},
                    **({"setting": self.settings[name][size]} if name in self.settings else {}),
                }
                for size, values in by_size.items()
            }
            if name != MODEL:
                differences[name] = {
                    str(size): {
                        key: paired_difference([model[size][key]], [values[key]]).to_dict()
                        for key in HEADLINE
                    }
                    for size, values in by_size.items()
                }
        users = len(next(iter(model.values()))[HEADLINE[0]]) if model else 0
        return {
            "sizes": list(self.sizes),
            "users": users,
            "scorers": scorers,
            "difference": differences,
        }

    def arrays(self) -> dict[str, np.ndarray]:
        """Flat per-user arrays, `cold_start/{size}/{scorer}/{metric}` (per_user.npz)."""
        return {
            f"cold_start/{size}/{name}/{key}": values[key]
            for name, by_size in self.per_user.items()
            for size, values in by_size.items()
            for key in HEADLINE
        }

    @classmethod
    def from_arrays(cls, arrays: Mapping[str, np.ndarray]) -> ColdStartCurve:
        """The per-user part of a curve back from `arrays` (no settings, cuts or top items)."""
        per_user: dict[str, dict[int, dict[str, np.ndarray]]] = {}
        for key, values in arrays.items():
            parts = key.split("/")
            if len(parts) == 4 and parts[0] == "cold_start" and parts[3] in HEADLINE:
                _, size, name, metric = parts
                per_user.setdefault(name, {}).setdefault(int(size), {})[metric] = values
        sizes = sorted({size for by_size in per_user.values() for size in by_size})
        return cls(tuple(sizes), per_user)


def cold_start_curve(
    prepared: Prepared,
    *,
    model_scorers: Mapping[str, ModelScorer],
    baselines: Baselines | None,
    extra: Sequence[BaselineSpec] = (),
    sizes: Sequence[int] = SUPPORT_SIZES,
) -> ColdStartCurve:
    """Cut every test (and validation) support to each size; score the model's scorers (keys:
    `MODEL` and its ablations) on the cut test users; tune every baseline of `baselines` (and
    `extra`, e.g. features_lr) on the validation users cut the same way and score the test
    users with the chosen setting."""
    threshold = prepared.interactions.positive_threshold
    valid, test = prepared.episodes["valid"], prepared.episodes["test"]
    cuts = {size: cut_support(test, size=size, threshold=threshold) for size in sizes}
    per_user: dict[str, dict[int, dict[str, np.ndarray]]] = {}
    top: dict[int, np.ndarray] = {}
    for name, scorer in model_scorers.items():
        for size, cut in cuts.items():
            scores = scorer(cut)
            per_user.setdefault(name, {})[size] = per_user_headline(
                cut, scores, threshold=threshold, known=test
            )
            if name == MODEL:
                top[size] = top_items(scores, test)
    settings: dict[str, dict[int, dict[str, float]]] = {}
    if baselines is not None:
        pairs = [
            TuningPair(cut_support(valid, size=size, threshold=threshold), cuts[size], valid)
            for size in sizes
        ]
        for spec in [*baselines.specs(), *extra]:
            tuned = baselines.tune(spec.name, spec.settings, spec.scorer, pairs)
            for size, result in zip(sizes, tuned, strict=True):
                per_user.setdefault(spec.name, {})[size] = per_user_headline(
                    cuts[size], result.test_scores, threshold=threshold, known=test
                )
                settings.setdefault(spec.name, {})[size] = dict(result.setting)
    return ColdStartCurve(tuple(sizes), per_user, settings, cuts, top)
