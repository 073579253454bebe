"""Tuned simple baselines on the same episodes as TaNP (SPEC section 4): popularity, shrunk-cosine
item-kNN and EASE, fitted on train users' positives, each with its one hyper-parameter chosen on
validation users by the model's selection score (formulas: docs/training.md). Score matrices are
(episodes, items); an item no method can score gets 0.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sparse

from training.compare import per_user_headline, selection_score
from training.episodes import EpisodeSet, Prepared
from training.item_stats import item_counts, positive_matrix

SHRINK_GRID = (0.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
LAMBDA_GRID = (10.0, 50.0, 200.0, 500.0, 1000.0, 3000.0)
EASE_MAX_ITEMS = 20000  # a dense (items, items) inverse: skipped above this many active items


def liked_matrix(episodes: EpisodeSet, *, items: int, threshold: float) -> sparse.csr_matrix:
    """(episodes, items) 0/1: each episode's support positives."""
    rows, columns = [], []
    for episode in range(len(episodes)):
        support_items, support_labels = episodes.support(episode)
        liked = support_items[support_labels >= threshold]
        rows.append(np.full(liked.size, episode))
        columns.append(liked)
    row = np.concatenate(rows) if rows else np.zeros(0, dtype=np.int64)
    column = np.concatenate(columns) if columns else np.zeros(0, dtype=np.int64)
    matrix = sparse.csr_matrix(
        (np.ones(row.size, dtype=np.float32), (row, column)), shape=(len(episodes), items)
    )
    matrix.data[:] = 1.0
    return matrix


@dataclass(frozen=True)
class TunedBaseline:
    """A baseline with its chosen setting and its test score matrix."""

    name: str
    setting: dict[str, Any]
    valid_selection: float
    test_scores: np.ndarray


class Baselines:
    """The train-user statistics every baseline shares, computed once per prepared split."""

    def __init__(self, prepared: Prepared) -> None:
        self.prepared = prepared
        self.threshold = prepared.interactions.positive_threshold
        self.items = len(prepared.interactions.item_ids)
        self.matrix = positive_matrix(prepared)
        self.counts = item_counts(self.matrix)
        self.by_item = self.matrix.T.tocsr()

    def _liked(self, episodes: EpisodeSet) -> sparse.csr_matrix:
        return liked_matrix(episodes, items=self.items, threshold=self.threshold)

    def popularity(self, episodes: EpisodeSet) -> np.ndarray:
        return np.tile(self.counts, (len(episodes), 1))

    def item_knn(self, episodes: EpisodeSet, *, shrink: float) -> np.ndarray:
        """score_i = sum over the support positives j of co(i, j) / (sqrt(n_i n_j) + shrink)
        (shrunk cosine; shrink 0 is plain cosine)."""
        liked = self._liked(episodes)
        used = np.flatnonzero(np.asarray(liked.sum(axis=0)).ravel())
        # co-occurrence rows of just the liked items: (used, items), whatever the catalog size
        rows = (self.by_item[used] @ self.matrix).tocoo()
        keep = used[rows.row] != rows.col
        row, column, data = rows.row[keep], rows.col[keep], rows.data[keep]
        scale = np.sqrt(self.counts[used[row]].astype(np.float64) * self.counts[column]) + shrink
        similarity = sparse.csr_matrix(
            (data / np.maximum(scale, 1e-12), (row, column)), shape=(used.size, self.items)
        )
        return np.asarray((liked[:, used] @ similarity).todense(), dtype=np.float32)

    def ease_weights(self, *, reg: float) -> tuple[np.ndarray, np.ndarray]:
        """(active items,) ids and the (active, active) EASE weights (Steck 2019):
        B = I - P diag(1 / diag P), P = (X^T X + lambda I)^-1 over the items with positives."""
        active = np.flatnonzero(self.counts > 0)
        columns = self.matrix[:, active]
        gram = (columns.T @ columns).toarray().astype(np.float32)
        gram[np.diag_indices_from(gram)] = self.counts[active] + reg
        inverse = np.linalg.inv(gram)
        weights = -inverse / np.diag(inverse)[None, :]
        np.fill_diagonal(weights, 0.0)
        return active, weights.astype(np.float32)

    def ease(self, episodes: EpisodeSet, *, reg: float) -> np.ndarray:
        active, weights = self.ease_weights(reg=reg)
        return self._ease_scores(episodes, active, weights)

    def _ease_scores(
        self, episodes: EpisodeSet, active: np.ndarray, weights: np.ndarray
    ) -> np.ndarray:
        scores = np.zeros((len(episodes), self.items), dtype=np.float32)
        liked = self._liked(episodes)[:, active]
        scores[:, active] = np.asarray(liked @ weights, dtype=np.float32)
        return scores

    def tune(
        self,
        name: str,
        grid: dict[str, tuple[float, ...]],
        scorer: Callable[..., np.ndarray],
    ) -> TunedBaseline:
        """Try every setting on the validation episodes, keep the best, score the test ones."""
        (parameter, values), *_ = grid.items()
        valid, test = self.prepared.episodes["valid"], self.prepared.episodes["test"]
        best_value, best_score = values[0], -np.inf
        for value in values:
            per_user = per_user_headline(
                valid, scorer(valid, **{parameter: value}), threshold=self.threshold
            )
            score = selection_score(per_user)
            if score > best_score:
                best_value, best_score = value, score
        return TunedBaseline(
            name, {parameter: best_value}, best_score, scorer(test, **{parameter: best_value})
        )

    def all_tuned(self) -> list[TunedBaseline]:
        """popularity, item_knn and ease (up to EASE_MAX_ITEMS active items), each tuned on
        validation users."""
        valid = self.prepared.episodes["valid"]
        popularity = TunedBaseline(
            "popularity",
            {},
            selection_score(
                per_user_headline(valid, self.popularity(valid), threshold=self.threshold)
            ),
            self.popularity(self.prepared.episodes["test"]),
        )
        knn = self.tune("item_knn", {"shrink": SHRINK_GRID}, self.item_knn)
        if int((self.counts > 0).sum()) > EASE_MAX_ITEMS:
            return [popularity, knn]
        return [popularity, knn, self._tune_ease()]

    def _tune_ease(self) -> TunedBaseline:
        # one inversion per lambda, shared by the validation and the test episodes
        valid, test = self.prepared.episodes["valid"], self.prepared.episodes["test"]
        best: tuple[float, float, np.ndarray] | None = None
        for reg in LAMBDA_GRID:
            active, weights = self.ease_weights(reg=reg)
            per_user = per_user_headline(
                valid, self._ease_scores(valid, active, weights), threshold=self.threshold
            )
            score = selection_score(per_user)
            if best is None or score > best[1]:
                best = (reg, score, self._ease_scores(test, active, weights))
        assert best is not None
        return TunedBaseline("ease", {"lambda": best[0]}, best[1], best[2])
