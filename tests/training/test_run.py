"""A training run's directory: the documented files and metrics.json's shape (SPEC section 5)."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest


def test_cli_train_writes_the_documented_run_directory(trained_run: Path) -> None:
    assert {path.name for path in trained_run.iterdir()} >= {
        "model.safetensors",
        "manifest.json",
        "metrics.json",
        "per_user.npz",
        "history.csv",
        "curves.png",
    }
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert set(metrics) == {
        "model", "split", "seed", "train_seed", "best_epoch", "epochs_run", "train_seconds",
        "epoch_seconds_median", "valid", "test", "baselines", "ablations", "cold_start",
        "uncertainty", "best_epoch_task_gain", "best_epoch_eligible",
    }  # fmt: skip
    for block in ("paper", "standard", "catalog"):
        assert block in metrics["test"] and block in metrics["valid"]
    assert set(metrics["baselines"]) == {
        "popularity", "item_knn", "ease", "knn_pop", "rp3beta", "features_lr",
    }  # fmt: skip
    assert set(metrics["ablations"]) == {"mean_task", "shuffled_task"}
    assert "shrink" in metrics["baselines"]["item_knn"]["setting"]
    assert "lambda" in metrics["baselines"]["ease"]["setting"]
    assert set(metrics["baselines"]["knn_pop"]["setting"]) == {"shrink", "weight"}
    assert set(metrics["baselines"]["rp3beta"]["setting"]) == {"alpha", "beta"}
    for entry in [*metrics["baselines"].values(), *metrics["ablations"].values()]:
        for block in ("paper", "standard", "catalog"):
            assert block in entry["test"]
        for key in ("NDCG@5", "Recall@20"):
            difference = entry["difference"][key]
            assert difference["low"] <= difference["mean"] <= difference["high"]
            assert difference["verdict"] in {"better", "worse", "tie"}
    assert set(metrics["test"]["paper"]) >= {"P@5", "NDCG@5", "MAP@5", "P@10", "NDCG@10", "MAP@10"}
    assert set(metrics["test"]["catalog"]) >= {"Recall@20", "NDCG@20", "HR@10"}
    with (trained_run / "history.csv").open() as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == metrics["epochs_run"] == 2
    assert (trained_run / "curves.png").read_bytes()[:4] == b"\x89PNG"


def test_the_run_holds_the_cold_start_curve_and_the_per_user_arrays(trained_run: Path) -> None:
    metrics = json.loads((trained_run / "metrics.json").read_text())
    curve = metrics["cold_start"]
    assert curve["sizes"] == [1, 3, 5, 10, 20]
    scorers = {
        "tanp", "mean_task", "popularity", "item_knn", "ease", "knn_pop", "rp3beta", "features_lr",
    }  # fmt: skip
    assert set(curve["scorers"]) == scorers
    assert set(curve["difference"]) == scorers - {"tanp"}
    for size in ("1", "20"):
        assert set(curve["scorers"]["rp3beta"][size]["setting"]) == {"alpha", "beta"}
        assert 0.0 <= curve["scorers"]["tanp"][size]["NDCG@5"] <= 1.0
    uncertainty = metrics["uncertainty"]
    assert 0.0 <= uncertainty["shrink_fraction"]["value"] <= 1.0
    assert set(uncertainty["spearman_ndcg5"]) >= {"1", "20", "all_sizes"}
    with np.load(trained_run / "per_user.npz") as arrays:
        users = arrays["users"]
        assert arrays["test/tanp/NDCG@5"].shape == users.shape
        assert arrays["test/knn_pop/Recall@20"].shape == users.shape
        assert arrays["cold_start/3/mean_task/NDCG@5"].shape == users.shape
        assert arrays["uncertainty/1/user"].shape == users.shape
        assert np.nanmean(arrays["cold_start/5/tanp/NDCG@5"]) == pytest.approx(
            curve["scorers"]["tanp"]["5"]["NDCG@5"]
        )
