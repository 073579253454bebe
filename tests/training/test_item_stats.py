"""Item statistics: fold tables never count their own fold's users; table tensors install sorted
neighbour rows into a model without a copy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from training.config import preset_configs
from training.data import load_interactions
from training.episodes import Prepared, random_split
from training.item_stats import TableTensors, fold_tables, item_counts, positive_matrix
from training.trainer import build_untrained, table_spec


@pytest.fixture(scope="module")
def prepared(synthetic_csv: Path) -> Prepared:
    return random_split(load_interactions(synthetic_csv), seed=1)


def test_fold_tables_never_count_the_users_of_their_own_fold(prepared: Prepared) -> None:
    model_config, train = preset_configs("paper", train={"folds": 3})
    model, full = build_untrained(prepared, model_config, train)
    fold_of_user, tables = fold_tables(
        prepared, spec=table_spec(model.config, train), full=full, folds=3, seed=train.seed
    )
    assert fold_of_user is not None and len(tables) == 3
    users = prepared.users_of("train")
    for fold, table in enumerate(tables):
        others = users[fold_of_user[users] != fold]
        np.testing.assert_array_equal(
            table.popularity, item_counts(positive_matrix(prepared, others))
        )
        assert table.features.shape == full.features.shape


def test_table_tensors_sort_neighbour_rows_and_install_without_a_copy(prepared: Prepared) -> None:
    model_config, train = preset_configs("paper", model={"neighbours": 5})
    model, full = build_untrained(prepared, model_config, train)
    tensors = TableTensors.of(full)
    assert bool((tensors.neighbour_index.diff(dim=1) >= 0).all())
    for row in range(full.neighbour_index.shape[0]):
        pairs = zip(full.neighbour_index[row].tolist(), full.neighbour_weight[row], strict=True)
        index, weight = zip(*sorted(pairs), strict=True)
        assert list(index) == tensors.neighbour_index[row].tolist()
        torch.testing.assert_close(torch.tensor(weight), tensors.neighbour_weight[row])
    tensors.install(model)
    assert model.item_features is tensors.features
    assert model.affinity.neighbour_weight is tensors.neighbour_weight
    torch.testing.assert_close(model.item_popularity, torch.from_numpy(full.popularity))
