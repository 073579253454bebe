"""Test metrics of SPEC section 4, each a per-user mean over episodes: `paper` (the authors' scorer,
quirks included), `standard` (within-query textbook P@5, NDCG@5, AUC) and `catalog` (every catalog
item but the support ranked against the query positives). Knows only arrays, not models.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from tanp.scoring import rank

PAPER_KS = (5, 7, 10)


def paper_precision(ranked: Sequence[int], labels: Sequence[float], *, k: int) -> float:
    """Authors' precision: t = the k largest labels; a ranked item is a hit when its label
    is still in t (then removed from t). P@k = hits / k.

    Quirk: with fewer than k positives, t holds zeros, so negatives in the top k count as hits.
    """
    pool = sorted(labels, reverse=True)[:k]
    hits = 0
    for index in ranked[:k]:
        if labels[index] in pool:
            pool.remove(labels[index])
            hits += 1
    return hits / k


def paper_average_precision(ranked: Sequence[int], labels: Sequence[float], *, k: int) -> float:
    """Authors' AP: sum over hits (same matching as precision) of hits_so_far / (i + 1),
    divided by k (not by the number of relevant items)."""
    pool = sorted(labels, reverse=True)[:k]
    hits, total = 0, 0.0
    for position, index in enumerate(ranked[:k]):
        if labels[index] in pool:
            hits += 1
            total += hits / (position + 1.0)
            pool.remove(labels[index])
    return total / k if hits else 0.0


def paper_ndcg(ranked: Sequence[int], labels: Sequence[float], *, k: int) -> float:
    """DCG@k = sum_i (2^label_i - 1) / log2(i + 2) over the top k; divided by the DCG of the
    labels sorted descending. 0 when the ideal DCG is 0 (the authors' code would divide by 0)."""
    ideal = sorted(labels, reverse=True)
    ideal_dcg = sum((2 ** ideal[i] - 1) / math.log2(i + 2) for i in range(min(k, len(ideal))))
    dcg = sum((2 ** labels[index] - 1) / math.log2(i + 2) for i, index in enumerate(ranked[:k]))
    return dcg / ideal_dcg if ideal_dcg > 0 else 0.0


def paper_metrics(ranked: Sequence[int], labels: Sequence[float]) -> dict[str, float]:
    """Keys P@k NDCG@k MAP@k for k in 5, 7, 10, for one user's within-query ranking.

    k is capped at the query length (the authors' queries always hold at least 10 items)."""
    result: dict[str, float] = {}
    for k in PAPER_KS:
        top = min(k, len(labels))
        result[f"P@{k}"] = paper_precision(ranked, labels, k=top) if top else 0.0
        result[f"NDCG@{k}"] = paper_ndcg(ranked, labels, k=top)
        result[f"MAP@{k}"] = paper_average_precision(ranked, labels, k=top) if top else 0.0
    return result


def dcg_binary(relevant: np.ndarray) -> float:
    """sum_i rel_i / log2(i + 2) for a 0/1 vector in ranked order."""
    return float(np.sum(relevant / np.log2(np.arange(2, relevant.size + 2))))


def ndcg_binary(relevant_in_order: np.ndarray, *, total_relevant: int, k: int) -> float:
    """Binary-gain NDCG@k; ideal DCG = min(k, total_relevant) hits at the top."""
    ideal = dcg_binary(np.ones(min(k, total_relevant)))
    return dcg_binary(relevant_in_order[:k].astype(np.float64)) / ideal if ideal > 0 else 0.0


def auc(scores: np.ndarray, relevant: np.ndarray) -> float | None:
    """P(score of a random positive > score of a random negative), ties count 1/2;
    None when the query lacks either class."""
    positives, negatives = scores[relevant], scores[~relevant]
    if positives.size == 0 or negatives.size == 0:
        return None
    greater = (positives[:, None] > negatives[None, :]).sum()
    ties = (positives[:, None] == negatives[None, :]).sum()
    return float((greater + 0.5 * ties) / (positives.size * negatives.size))


def standard_metrics(scores: np.ndarray, relevant: np.ndarray) -> dict[str, float | None]:
    """P@5 = positives in the top 5 / 5; NDCG@5 binary gains; AUC. Ranking within the query."""
    order = rank(scores)
    in_order = relevant[order]
    total = int(relevant.sum())
    return {
        "P@5": float(in_order[:5].sum()) / 5.0,
        "NDCG@5": ndcg_binary(in_order, total_relevant=total, k=5) if total else None,
        "AUC": auc(scores, relevant),
    }


def catalog_metrics(ranked: np.ndarray, relevant_items: set[int]) -> dict[str, float]:
    """On a full-catalog ranking (support items already removed):
    Recall@20 = |top20 & rel| / |rel|; NDCG@20 binary with ideal min(20, |rel|) hits;
    HR@10 = 1 if any relevant item is in the top 10."""
    hits = np.fromiter(
        (int(item) in relevant_items for item in ranked[:20]),
        dtype=bool,
        count=min(20, len(ranked)),
    )
    total = len(relevant_items)
    return {
        "Recall@20": float(hits.sum()) / total,
        "NDCG@20": ndcg_binary(hits, total_relevant=total, k=20),
        "HR@10": float(hits[:10].any()),
    }


def mean_metrics(rows: list[dict[str, float | None]]) -> dict[str, float]:
    """Per-key mean over users, skipping users for whom a metric is undefined (None)."""
    keys = list(dict.fromkeys(key for row in rows for key in row))
    result: dict[str, float] = {}
    for key in keys:
        values = [value for row in rows if (value := row.get(key)) is not None]
        result[key] = float(np.mean(values)) if values else float("nan")
    result["users"] = float(len(rows))
    return result
