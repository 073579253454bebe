"""Splits and episodes: the authors' split exactly, the random recipe, no leakage."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from tests.synthetic import SHARED_DATA
from training.data import load_interactions, load_ratings_final
from training.episodes import (
    all_user_episodes,
    load_prepared,
    random_split,
    save_prepared,
    tanp_split,
)


def test_random_split_recipe(synthetic_csv: Path) -> None:
    prepared = random_split(load_interactions(synthetic_csv), seed=3)
    counts = [int((prepared.user_split == index).sum()) for index in range(3)]
    assert counts == [42, 6, 12]
    for name, episodes in prepared.episodes.items():
        assert (episodes.support_len == 20).all(), name
        assert (episodes.query_len == 12).all(), name
        assert set(episodes.users.tolist()) <= set(prepared.users_of(name).tolist())
    again = random_split(load_interactions(synthetic_csv), seed=3)
    assert np.array_equal(
        again.episodes["test"].support_items, prepared.episodes["test"].support_items
    )


def test_splits_are_disjoint_and_test_items_seen_in_training(synthetic_csv: Path) -> None:
    prepared = random_split(load_interactions(synthetic_csv), seed=5)
    users = [set(prepared.users_of(name).tolist()) for name in ("train", "valid", "test")]
    assert not (users[0] & users[1]) and not (users[0] & users[2]) and not (users[1] & users[2])
    train_items = set(prepared.interactions.items[prepared.train_rows()].tolist())
    test = prepared.episodes["test"]
    for episode in range(len(test)):
        assert set(test.query(episode)[0].tolist()) <= train_items


def test_all_user_episodes_cover_short_users(synthetic_csv: Path) -> None:
    prepared = random_split(load_interactions(synthetic_csv), seed=5)
    episodes = all_user_episodes(prepared, rng=np.random.default_rng(0))
    assert len(episodes) == 42
    assert set(episodes.users.tolist()) == set(prepared.users_of("train").tolist())


def test_prepared_round_trip(synthetic_csv: Path, tmp_path: Path) -> None:
    prepared = random_split(load_interactions(synthetic_csv), seed=2)
    save_prepared(prepared, tmp_path / "prep")
    assert sorted(path.name for path in (tmp_path / "prep").iterdir()) == [
        "episodes.npz",
        "prepared.json",
    ]
    loaded = load_prepared(tmp_path / "prep")
    assert loaded.interactions.item_ids == prepared.interactions.item_ids
    for name in ("train", "valid", "test"):
        for key, value in vars(prepared.episodes[name]).items():
            assert np.array_equal(getattr(loaded.episodes[name], key), value)


@pytest.mark.integration
def test_tanp_split_reproduces_the_shipped_episodes() -> None:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present")
    prepared = tanp_split(load_ratings_final(SHARED_DATA), SHARED_DATA)
    assert {name: len(episodes) for name, episodes in prepared.episodes.items()} == {
        "train": 248,
        "valid": 35,
        "test": 66,
    }
    assert [int((prepared.user_split == index).sum()) for index in range(3)] == [1310, 187, 375]
    shipped: dict[tuple[str, int], dict[str, list[tuple[str, float]]]] = {}
    with (SHARED_DATA / "tanp_split.tsv").open() as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            key = (row["split"], int(row["episode"]))
            roles = shipped.setdefault(key, {"support": [], "query": []})
            roles[row["role"]].append((row["item"], float(row["label"])))
    item_ids = prepared.interactions.item_ids
    for (name, episode), roles in shipped.items():
        episodes = prepared.episodes[name]
        for role, getter in (("support", episodes.support), ("query", episodes.query)):
            items, labels = getter(episode)
            assert [
                (item_ids[i], float(label)) for i, label in zip(items, labels, strict=True)
            ] == roles[role]
    assert (prepared.episodes["test"].support_len == 20).all()
