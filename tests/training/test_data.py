"""Loaders for the three input formats and their one-line errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tests.synthetic import SHARED_DATA
from training.data import DataError, load_hetrec, load_interactions, load_ratings_final


def test_generic_csv(synthetic_csv: Path) -> None:
    data = load_interactions(synthetic_csv)
    assert len(data.user_ids) == 60 and len(data.item_ids) == 80
    assert data.labels.size == 60 * 32
    assert data.positive_threshold == 1.0
    assert data.source["format"] == "generic"


def test_generic_tsv_with_explicit_ratings(tmp_path: Path) -> None:
    path = tmp_path / "ratings.tsv"
    path.write_text("user\titem\trating\n1\t10\t5\n1\t11\t2\n2\t10\t4\n")
    data = load_interactions(path)
    assert data.label_min == 2.0 and data.label_max == 5.0
    assert data.positive_threshold == pytest.approx(4.25)
    assert data.item_ids == ["10", "11"]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("user,item\n1,2\n", "header lacks column"),
        ("user,item,rating\n1,2,x\n", ":2: rating 'x' is not a number"),
        ("user,item,rating\n1,2,1\n1,2,0\n", ":3: duplicate"),
        ("user,item,rating\n", "no interactions"),
    ],
)
def test_generic_errors_name_file_and_line(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    with pytest.raises(DataError, match=message) as error:
        load_interactions(path)
    assert str(path) in str(error.value)


def test_ratings_final_errors_name_the_line(tmp_path: Path) -> None:
    (tmp_path / "ratings_final.txt").write_text("0\t1\t1\n0\t2\n")
    with pytest.raises(DataError, match=r"ratings_final.txt:2: expected 3"):
        load_ratings_final(tmp_path)


def test_missing_data_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no such file"):
        load_interactions(tmp_path / "nowhere")
    with pytest.raises(DataError, match="found neither"):
        load_interactions(tmp_path)


@pytest.mark.integration
def test_real_lastfm_and_hetrec_rebuild_agree() -> None:
    if not SHARED_DATA.is_dir():
        pytest.skip(f"{SHARED_DATA} not present")
    ratings = load_ratings_final(SHARED_DATA)
    assert (len(ratings.user_ids), len(ratings.item_ids), ratings.labels.size) == (
        1872,
        3846,
        42346,
    )
    assert ratings.item_names is not None
    assert ratings.item_names[0] == "Diary of Dreams" and ratings.item_names[20] == "Morcheeba"
    rebuilt = load_hetrec(SHARED_DATA)
    assert rebuilt.item_ids[0] == "2" and rebuilt.user_ids[:2] == ["2", "3"]

    # same (user, item, label) rows: the negatives are re-drawn exactly (RandomState(555))
    def rows(data: object) -> set[tuple[int, int, float]]:
        return set(zip(data.users.tolist(), data.items.tolist(), data.labels.tolist(), strict=True))  # type: ignore[attr-defined]

    assert rows(ratings) == rows(rebuilt)
    assert np.array_equal(np.sort(ratings.labels), np.sort(rebuilt.labels))


def test_hetrec_without_kg_index_uses_every_artist(tmp_path: Path) -> None:
    lines = ["userID\tartistID\tweight"]
    lines += [f"{user}\t{artist}\t{10 * artist}" for user in (2, 3) for artist in (5, 7, 11, 13)]
    lines += ["4\t17\t1"]
    (tmp_path / "user_artists.dat").write_text("\n".join(lines) + "\n")
    (tmp_path / "artists.dat").write_text("id\tname\turl\tpictureURL\n5\tFive\tu\tp\n")
    data = load_interactions(tmp_path)
    assert data.item_ids == ["5", "7", "11", "13", "17"]
    assert data.user_ids == ["2", "3", "4"]
    assert data.item_names is not None and data.item_names[0] == "Five"
    # each user gets as many negatives as positives, never one of its positives
    for user in range(3):
        rows = data.users == user
        liked = set(data.items[rows & (data.labels == 1)].tolist())
        disliked = set(data.items[rows & (data.labels == 0)].tolist())
        assert len(disliked) == min(len(liked), 5 - len(liked))
        assert not liked & disliked
