"""The cold-start curve: supports cut to their first n points with a liked one kept, the query and
the ranked items unchanged, every baseline re-tuned at each n."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.baselines import Baselines
from training.cold_start import MODEL, ColdStartCurve, cold_start_curve, cut_support
from training.compare import per_user_headline
from training.data import load_interactions
from training.episodes import EpisodeSet, Prepared, random_split


@pytest.fixture(scope="module")
def prepared(synthetic_csv: Path) -> Prepared:
    return random_split(load_interactions(synthetic_csv), seed=5)


def test_a_cut_keeps_the_first_points_and_one_liked_and_the_query() -> None:
    episodes = EpisodeSet.from_lists(
        users=[0, 1, 2],
        supports=[
            (np.array([10, 11, 12, 13]), np.array([1.0, 0.0, 1.0, 0.0])),
            (np.array([20, 21, 22, 23]), np.array([0.0, 0.0, 0.0, 1.0])),
            (np.array([30, 31]), np.array([0.0, 0.0])),
        ],
        queries=[(np.array([1, 2]), np.array([1.0, 0.0]))] * 3,
    )
    one = cut_support(episodes, size=1, threshold=0.5)
    assert one.support(0)[0].tolist() == [10]
    assert one.support(1)[0].tolist() == [23]  # no liked among the first: the first liked one
    assert one.support(2)[0].tolist() == [30]  # nothing liked at all: the first point
    three = cut_support(episodes, size=3, threshold=0.5)
    assert three.support(0)[0].tolist() == [10, 11, 12]
    assert three.support(1)[0].tolist() == [20, 21, 23]
    assert three.support(2)[0].tolist() == [30, 31]
    for cut in (one, three):
        assert np.array_equal(cut.query_items, episodes.query_items)
        assert np.array_equal(cut.query_labels, episodes.query_labels)
    with pytest.raises(ValueError):
        cut_support(episodes, size=0, threshold=0.5)


def test_hidden_support_items_stay_out_of_the_catalog_ranking(prepared: Prepared) -> None:
    baselines = Baselines(prepared)
    test = prepared.episodes["test"]

    def support_first(episodes: EpisodeSet) -> np.ndarray:
        # popularity, with the user's whole original support on top
        scores = baselines.popularity(episodes).astype(np.float64)
        for episode in range(len(test)):
            scores[episode, test.support(episode)[0]] = 1e9
        return scores

    curve = cold_start_curve(
        prepared,
        model_scorers={MODEL: support_first, "popularity_only": baselines.popularity},
        baselines=None,
        sizes=(1, 3),
    )
    for size in (1, 3):
        np.testing.assert_array_equal(
            curve.per_user[MODEL][size]["Recall@20"],
            curve.per_user["popularity_only"][size]["Recall@20"],
        )
        assert curve.top[size].shape == (len(test), 20)
        for episode in range(len(test)):
            assert not set(curve.top[size][episode]) & set(test.support(episode)[0].tolist())


def test_the_curve_tunes_every_baseline_at_every_size(prepared: Prepared) -> None:
    baselines = Baselines(prepared)
    test = prepared.episodes["test"]
    threshold = prepared.interactions.positive_threshold

    def model(episodes: EpisodeSet) -> np.ndarray:
        return baselines.item_knn(episodes, shrink=5.0)

    sizes = (1, 5, 20)
    curve = cold_start_curve(
        prepared, model_scorers={MODEL: model}, baselines=baselines, sizes=sizes
    )
    names = {MODEL, "popularity", "item_knn", "ease", "knn_pop", "rp3beta"}
    assert set(curve.per_user) == names
    for name in names - {MODEL}:
        assert set(curve.settings[name]) == set(sizes)
    # support 20 is the whole support: the curve's last point is the ordinary evaluation
    whole = per_user_headline(test, model(test), threshold=threshold)
    np.testing.assert_array_equal(curve.per_user[MODEL][20]["NDCG@5"], whole["NDCG@5"])
    section = curve.to_dict()
    assert section["sizes"] == list(sizes) and section["users"] == len(test)
    assert set(section["difference"]) == names - {MODEL}
    assert set(section["scorers"]["knn_pop"]["1"]["setting"]) == {"shrink", "weight"}
    difference = section["difference"]["popularity"]["5"]["NDCG@5"]
    assert difference["low"] <= difference["mean"] <= difference["high"]
    again = ColdStartCurve.from_arrays(curve.arrays())
    assert again.sizes == sizes
    for name in names:
        for size in sizes:
            np.testing.assert_array_equal(
                again.per_user[name][size]["Recall@20"], curve.per_user[name][size]["Recall@20"]
            )
