"""Tuned simple baselines on the same episodes as TaNP (SPEC section 4): popularity, shrunk-cosine
item-kNN, EASE, the kNN + log-popularity blend and RP3beta, fitted on train users' positives, each
with its settings chosen on validation users by the model's selection score (formulas:
docs/training.md). Score matrices are (episodes, items); an item no method can score gets 0.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sparse
import torch

from training.compare import per_user_headline, selection_score
from training.episodes import EpisodeSet, Prepared
from training.item_stats import item_counts, positive_matrix

SHRINK_GRID = (0.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0)
LAMBDA_GRID = (10.0, 50.0, 200.0, 500.0, 1000.0, 3000.0)
EASE_MEMO_BYTES = 512 * 2**20  # EASE weight matrices kept for reuse (6 x 59 MB at 3,846 items)
EASE_MAX_ITEMS = 20000  # a dense (items, items) inverse: skipped above this many active items
BLEND_SHRINK_GRID = (0.0, 10.0, 50.0, 100.0)
BLEND_WEIGHT_GRID = (0.0, 0.01, 0.1, 0.3, 1.0, 3.0)
RP3_ALPHA_GRID = (0.5, 0.75, 1.0, 1.25)
RP3_BETA_GRID = (0.0, 0.2, 0.4, 0.6, 0.8)

Setting = Mapping[str, float]
# (episodes, setting) -> (episodes, items) scores
SettingScorer = Callable[[EpisodeSet, Setting], np.ndarray]


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
class TuningPair:
    """Validation episodes a setting is chosen on and the test episodes it is applied to;
    `known_valid`: the episodes whose support items the validation catalog ranking leaves
    out (the uncut episodes of a cut support, training.cold_start; default `valid`)."""

    valid: EpisodeSet
    test: EpisodeSet
    known_valid: EpisodeSet | None = None


@dataclass(frozen=True)
class BaselineSpec:
    """A baseline's name, the settings it is tuned over and its scorer."""

    name: str
    settings: tuple[Setting, ...]
    scorer: SettingScorer


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
        self._ease_memo: dict[float, tuple[np.ndarray, np.ndarray]] = {}

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
        B = I - P diag(1 / diag P), P = (X^T X + lambda I)^-1 over the items with positives.
        Weights are kept per lambda while they fit EASE_MEMO_BYTES (every lambda of the grid
        on the Last.fm splits), else the last lambda's only: `tune` asks for the chosen lambdas
        again when it scores the test users, and the cold-start curve tunes again at each n."""
        if reg in self._ease_memo:
            return self._ease_memo[reg]
        active = np.flatnonzero(self.counts > 0)
        columns = self.matrix[:, active]
        gram = (columns.T @ columns).toarray().astype(np.float32)
        gram[np.diag_indices_from(gram)] = self.counts[active] + reg
        # the Gram matrix plus lambda I is symmetric positive definite: a Cholesky inverse on
        # torch's thread budget (1 in training) took 0.6 s at 3,846 items against 1.8 s for
        # numpy's LU inverse on two threads
        factor = torch.linalg.cholesky(torch.from_numpy(gram))
        inverse = torch.cholesky_inverse(factor).numpy()
        weights = -inverse / np.diag(inverse)[None, :]
        np.fill_diagonal(weights, 0.0)
        kept = sum(matrix.nbytes for _, matrix in self._ease_memo.values())
        if kept + weights.nbytes > EASE_MEMO_BYTES:
            self._ease_memo.clear()
        self._ease_memo[reg] = (active, weights.astype(np.float32))
        return self._ease_memo[reg]

    def ease(self, episodes: EpisodeSet, *, reg: float) -> np.ndarray:
        active, weights = self.ease_weights(reg=reg)
        scores = np.zeros((len(episodes), self.items), dtype=np.float32)
        liked = self._liked(episodes)[:, active]
        scores[:, active] = np.asarray(liked @ weights, dtype=np.float32)
        return scores

    def knn_pop(self, episodes: EpisodeSet, *, shrink: float, weight: float) -> np.ndarray:
        """score_i = knn_i / max_j knn_j + weight * log(1 + n_i) / log(1 + max_j n_j): the
        shrunk item-kNN score, scaled to at most 1 per user, blended with log popularity (which
        also breaks kNN's ties when the support has few liked items)."""
        knn = self.item_knn(episodes, shrink=shrink)
        top = knn.max(axis=1, keepdims=True)
        scaled = knn / np.where(top > 0, top, 1.0)
        log_popularity = np.log1p(self.counts.astype(np.float64))
        log_popularity /= max(float(log_popularity.max()), 1e-12)
        return (scaled + weight * log_popularity[None, :]).astype(np.float32)

    def rp3beta(self, episodes: EpisodeSet, *, alpha: float, beta: float) -> np.ndarray:
        """RP3beta (Paudel et al. 2017): score_i = sum over the support positives j of
        W(j, i) = n_j^-alpha n_i^-beta sum_u x_uj x_ui d_u^-alpha, the alpha-powered two-step
        random walk j -> user -> i (d_u = the user's positives) with popular targets divided by
        n_i^beta; no item is its own neighbour."""
        liked = self._liked(episodes)
        used = np.flatnonzero(np.asarray(liked.sum(axis=0)).ravel())
        degree = np.maximum(np.asarray(self.matrix.sum(axis=1)).ravel(), 1.0)
        walked = sparse.diags(degree**-alpha) @ self.matrix  # (users, items)
        rows = (self.by_item[used] @ walked).tocoo()  # (used, items)
        keep = used[rows.row] != rows.col
        row, column, data = rows.row[keep], rows.col[keep], rows.data[keep]
        counts = np.maximum(self.counts.astype(np.float64), 1.0)
        weight = data / (counts[used[row]] ** alpha * counts[column] ** beta)
        transition = sparse.csr_matrix((weight, (row, column)), shape=(used.size, self.items))
        return np.asarray((liked[:, used] @ transition).todense(), dtype=np.float32)

    def tune(
        self,
        name: str,
        settings: Sequence[Setting],
        scorer: SettingScorer,
        pairs: Sequence[TuningPair],
    ) -> list[TunedBaseline]:
        """One tuned baseline per pair: every setting scored on the pair's validation episodes,
        the best by the selection score kept (the first in `settings` order on ties), and only
        that one scored on the pair's test episodes. Settings run in the outer loop, so a
        setting's precomputation (EASE's inverse) serves every pair."""
        selection = np.full((len(settings), len(pairs)), -np.inf)
        for index, setting in enumerate(settings):
            for column, pair in enumerate(pairs):
                per_user = per_user_headline(
                    pair.valid,
                    scorer(pair.valid, setting),
                    threshold=self.threshold,
                    known=pair.known_valid,
                )
                selection[index, column] = selection_score(per_user)
        chosen = np.nan_to_num(selection, nan=-np.inf).argmax(axis=0)
        tuned: dict[int, TunedBaseline] = {}
        for index in sorted(set(chosen.tolist())):
            for column in np.flatnonzero(chosen == index).tolist():
                tuned[column] = TunedBaseline(
                    name,
                    dict(settings[index]),
                    float(selection[index, column]),
                    scorer(pairs[column].test, settings[index]),
                )
        return [tuned[column] for column in range(len(pairs))]

    def specs(self) -> list[BaselineSpec]:
        """Every baseline with its settings: popularity, item_knn, ease (up to EASE_MAX_ITEMS
        active items), knn_pop and rp3beta."""
        specs = [
            BaselineSpec("popularity", ({},), lambda episodes, _: self.popularity(episodes)),
            BaselineSpec(
                "item_knn",
                tuple({"shrink": shrink} for shrink in SHRINK_GRID),
                lambda episodes, setting: self.item_knn(episodes, shrink=setting["shrink"]),
            ),
        ]
        if int((self.counts > 0).sum()) <= EASE_MAX_ITEMS:
            specs.append(
                BaselineSpec(
                    "ease",
                    tuple({"lambda": reg} for reg in LAMBDA_GRID),
                    lambda episodes, setting: self.ease(episodes, reg=setting["lambda"]),
                )
            )
        specs += [
            BaselineSpec(
                "knn_pop",
                tuple(
                    {"shrink": shrink, "weight": weight}
                    for shrink in BLEND_SHRINK_GRID
                    for weight in BLEND_WEIGHT_GRID
                ),
                lambda episodes, setting: self.knn_pop(
                    episodes, shrink=setting["shrink"], weight=setting["weight"]
                ),
            ),
            BaselineSpec(
                "rp3beta",
                tuple(
                    {"alpha": alpha, "beta": beta}
                    for alpha in RP3_ALPHA_GRID
                    for beta in RP3_BETA_GRID
                ),
                lambda episodes, setting: self.rp3beta(
                    episodes, alpha=setting["alpha"], beta=setting["beta"]
                ),
            ),
        ]
        return specs

    def all_tuned(self) -> list[TunedBaseline]:
        """Every baseline of `specs`, tuned on the validation users, scored on the test users."""
        pair = TuningPair(self.prepared.episodes["valid"], self.prepared.episodes["test"])
        return [
            self.tune(spec.name, spec.settings, spec.scorer, [pair])[0] for spec in self.specs()
        ]
