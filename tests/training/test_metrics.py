"""The metric functions against hand-computed values, quirks of the authors' scorer included."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.metrics import (
    auc,
    catalog_metrics,
    mean_metrics,
    paper_average_precision,
    paper_metrics,
    paper_ndcg,
    paper_precision,
    standard_metrics,
)


def test_paper_precision_counts_matching_negatives_when_positives_are_few() -> None:
    # 2 positives among 6; ranking puts one positive then four negatives in the top 5
    labels = [1.0, 1.0, 0.0, 0.0, 0.0, 0.0]
    ranked = [0, 2, 3, 4, 5, 1]
    # t = [1, 1, 0, 0, 0]: item 0 hits a 1, items 2, 3, 4 hit the three 0s, item 5 finds none left
    assert paper_precision(ranked, labels, k=5) == pytest.approx(4 / 5)
    textbook = standard_metrics(np.array([6, 1, 5, 4, 3, 2], dtype=float), np.array(labels) >= 1)
    assert textbook["P@5"] == pytest.approx(1 / 5)


def test_paper_precision_random_user_with_exactly_k_items_scores_one() -> None:
    labels = [1.0, 0.0, 1.0, 0.0, 0.0]
    assert paper_precision([4, 3, 2, 1, 0], labels, k=5) == 1.0


def test_paper_average_precision_divides_by_k() -> None:
    labels = [1.0, 0.0, 1.0, 1.0, 1.0, 1.0, 1.0]
    ranked = [0, 1, 2, 3, 4, 5, 6]
    # t = five 1s: hits at positions 1, 3, 4, 5 -> 1/1 + 2/3 + 3/4 + 4/5, divided by k = 5
    expected = (1 + 2 / 3 + 3 / 4 + 4 / 5) / 5
    assert paper_average_precision(ranked, labels, k=5) == pytest.approx(expected)


def test_paper_ndcg_binary_by_hand() -> None:
    labels = [0.0, 1.0, 1.0, 0.0, 0.0, 0.0]
    ranked = [0, 1, 3, 2, 4, 5]
    dcg = 1 / math.log2(3) + 1 / math.log2(5)
    ideal = 1 + 1 / math.log2(3)
    assert paper_ndcg(ranked, labels, k=5) == pytest.approx(dcg / ideal)


def test_paper_ndcg_uses_exponential_gains_for_graded_labels() -> None:
    labels = [3.0, 1.0]
    assert paper_ndcg([1, 0], labels, k=2) == pytest.approx(
        (1 + 7 / math.log2(3)) / (7 + 1 / math.log2(3))
    )


def test_paper_metrics_keys_and_perfect_ranking() -> None:
    labels = [1.0] * 6 + [0.0] * 6
    result = paper_metrics(list(range(12)), labels)
    assert set(result) == {f"{m}@{k}" for m in ("P", "NDCG", "MAP") for k in (5, 7, 10)}
    assert result["NDCG@5"] == pytest.approx(1.0)
    assert result["P@5"] == 1.0


def test_auc_with_ties_and_missing_class() -> None:
    scores = np.array([0.9, 0.5, 0.5, 0.1])
    relevant = np.array([True, True, False, False])
    # pairs: (0.9>0.5), (0.9>0.1), (0.5=0.5 -> 1/2), (0.5>0.1) = 3.5 / 4
    assert auc(scores, relevant) == pytest.approx(3.5 / 4)
    assert auc(scores, np.ones(4, dtype=bool)) is None


def test_catalog_metrics_by_hand() -> None:
    ranked = np.arange(100, 130)
    relevant = {101, 125, 999}
    result = catalog_metrics(ranked, relevant)
    assert result["Recall@20"] == pytest.approx(1 / 3)
    assert result["NDCG@20"] == pytest.approx(
        (1 / math.log2(3)) / (1 + 1 / math.log2(3) + 1 / math.log2(4))
    )
    assert result["HR@10"] == 1.0
    assert catalog_metrics(ranked, {129})["HR@10"] == 0.0


def test_mean_metrics_skips_undefined_values() -> None:
    result = mean_metrics([{"AUC": 0.5, "P@5": 1.0}, {"AUC": None, "P@5": 0.0}])
    assert result == {"AUC": 0.5, "P@5": 0.5, "users": 2.0}
