"""Strong simple baselines scored on the same episodes as TaNP, from train users only.

popularity: positive count of each item among train users.
item_knn: sum over the support positives j of cos(i, j), the cosine similarity of the items'
train-user positive vectors (co-occurrence / sqrt(count_i * count_j)).
"""

from __future__ import annotations

import numpy as np

from training.episodes import EpisodeSet, Prepared


def positive_matrix(prepared: Prepared) -> np.ndarray:
    """(train users, items) 0/1 matrix of train users' positive interactions."""
    interactions = prepared.interactions
    rows = prepared.train_rows()
    threshold = interactions.positive_threshold
    rows = rows[interactions.labels[rows] >= threshold]
    train_users = prepared.users_of("train")
    position = np.full(len(interactions.user_ids), -1, dtype=np.int64)
    position[train_users] = np.arange(train_users.size)
    matrix = np.zeros((train_users.size, len(interactions.item_ids)), dtype=np.float32)
    matrix[position[interactions.users[rows]], interactions.items[rows]] = 1.0
    return matrix


def item_popularity(prepared: Prepared) -> np.ndarray:
    """(items,) positive counts among train users."""
    return positive_matrix(prepared).sum(axis=0)


def cosine_similarity(matrix: np.ndarray) -> np.ndarray:
    """(items, items) cosine of item columns; zero diagonal."""
    co_occurrence = matrix.T @ matrix
    norms = np.sqrt(np.diag(co_occurrence)).clip(min=1e-12)
    similarity = co_occurrence / norms[:, None] / norms[None, :]
    np.fill_diagonal(similarity, 0.0)
    return similarity.astype(np.float32)


def popularity_scores(prepared: Prepared, episodes: EpisodeSet) -> np.ndarray:
    """(E, items): every user gets the same popularity scores."""
    return np.tile(item_popularity(prepared), (len(episodes), 1))


def item_knn_scores(prepared: Prepared, episodes: EpisodeSet) -> np.ndarray:
    """(E, items): summed similarity to each episode's support positives."""
    similarity = cosine_similarity(positive_matrix(prepared))
    threshold = prepared.interactions.positive_threshold
    scores = np.zeros((len(episodes), similarity.shape[0]), dtype=np.float32)
    for episode in range(len(episodes)):
        items, labels = episodes.support(episode)
        liked = items[labels >= threshold]
        if liked.size:
            scores[episode] = similarity[liked].sum(axis=0)
    return scores
