"""Batched training: the episode draw, the losses, fold tables without self-leak, learning on
structured data (with and without the neighbour path), the CLI."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tanp.model import Gaussian
from training.cli import main
from training.compare import per_user_headline
from training.config import preset_configs
from training.data import load_interactions
from training.episodes import Prepared, random_split
from training.evaluate import tanp_scores
from training.features_lr import fit_logistic
from training.item_stats import item_counts, positive_matrix
from training.losses import clustering_loss, dec_target, gaussian_kl, listwise_loss
from training.trainer import (
    build_untrained,
    draw_step,
    fold_tables,
    table_spec,
    train_model,
    training_profiles,
)


@pytest.fixture(scope="module")
def prepared(synthetic_csv: Path) -> Prepared:
    return random_split(load_interactions(synthetic_csv), seed=1)


def test_episode_draw_follows_the_recipe(prepared: Prepared) -> None:
    model_config, train = preset_configs(
        "paper", train={"support_size": 6, "query_cap": 5, "negatives": 7, "folds": 0}
    )
    model, tables = build_untrained(prepared, model_config, train)
    profiles = training_profiles(prepared, train=train, fold_of_user=None, seen=[tables.seen])
    chosen = torch.arange(8)
    batch = draw_step(
        profiles,
        chosen,
        train=train,
        num_items=model.config.num_items,
        threshold=1.0,
        generator=torch.Generator().manual_seed(0),
    )
    for row, index in enumerate(chosen.tolist()):
        length = int(profiles.lengths[index])
        points = dict(
            zip(
                profiles.items[index, :length].tolist(),
                profiles.labels[index, :length].tolist(),
                strict=True,
            )
        )
        support = batch.support_items[row][batch.support_mask[row]].tolist()
        query = batch.target_items[row][batch.target_mask[row]].tolist()
        assert len(support) == min(6, length // 2) and len(query) == min(5, length - len(support))
        assert not set(support) & set(query) and set(support) | set(query) <= set(points)
        labels = batch.target_labels[row][batch.target_mask[row]].tolist()
        assert labels == [points[item] for item in query]
        negatives = batch.target_items[row, batch.target_mask.shape[1] - 7 :]
        assert not batch.target_mask[row, -7:].any() and len(negatives) == 7
        # a support item is never a candidate; the positives are exactly the liked query points
        candidates = batch.target_items[row][batch.candidates[row]].tolist()
        assert not set(support) & set(candidates)
        assert batch.positive[row].sum() == sum(points[item] >= 1 for item in query)


def test_gaussian_kl_zero_for_equal_and_positive_otherwise() -> None:
    prior = Gaussian(torch.zeros(2, 3), torch.zeros(2, 3))
    assert torch.allclose(gaussian_kl(prior, prior), torch.zeros(2))
    shifted = Gaussian(torch.ones(2, 3), torch.zeros(2, 3))
    torch.testing.assert_close(gaussian_kl(shifted, prior), torch.full((2,), 1.5))


def test_dec_target_sharpens_and_reference_target_is_all_ones() -> None:
    assignment = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    target = dec_target(assignment)
    torch.testing.assert_close(target.sum(1), torch.ones(2))
    assert target[0, 0] > assignment[0, 0] and target[1, 2] > assignment[1, 2]
    reference = clustering_loss(assignment, target="reference")
    torch.testing.assert_close(reference, -torch.log(assignment).sum() / 2)
    uniform = torch.full((2, 3), 1 / 3)
    assert clustering_loss(uniform, target="dec").abs() < 1e-6


def test_listwise_loss_is_the_positives_mean_negative_log_softmax() -> None:
    scores = torch.tensor([[2.0, 0.0, 1.0, 5.0]])
    positive = torch.tensor([[True, False, True, False]])
    candidates = torch.tensor([[True, True, True, False]])  # the 5.0 is a support item
    denominator = np.log(np.exp(2.0) + np.exp(0.0) + np.exp(1.0))
    expected = ((denominator - 2.0) + (denominator - 1.0)) / 2
    torch.testing.assert_close(
        listwise_loss(scores, positive=positive, candidates=candidates),
        torch.tensor([expected], dtype=torch.float32),
    )
    nothing = listwise_loss(scores, positive=torch.zeros_like(positive), candidates=candidates)
    assert nothing.item() == 0.0


def test_fold_tables_never_count_the_users_of_their_own_fold(prepared: Prepared) -> None:
    model_config, train = preset_configs("paper", train={"folds": 3})
    model, full = build_untrained(prepared, model_config, train)
    fold_of_user, tables = fold_tables(
        prepared, spec=table_spec(model.config, train), full=full, train=train
    )
    assert fold_of_user is not None and len(tables) == 3
    users = prepared.users_of("train")
    for fold, table in enumerate(tables):
        others = users[fold_of_user[users] != fold]
        np.testing.assert_array_equal(
            table.popularity, item_counts(positive_matrix(prepared, others))
        )
        assert table.features.shape == full.features.shape


def test_fit_logistic_recovers_a_known_model() -> None:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(20000, 2, generator=generator) * torch.tensor([1.0, 10.0])
    logits = 2.0 * inputs[:, 0] - 0.3 * inputs[:, 1] + 0.5
    targets = (torch.rand(20000, generator=generator) < torch.sigmoid(logits)).float()
    weights = fit_logistic(inputs, targets, l2=0.0)
    torch.testing.assert_close(weights, torch.tensor([2.0, -0.3, 0.5]), atol=0.15, rtol=0.1)


def _test_ndcg(prepared: Prepared, model: torch.nn.Module, edit: str | None = None) -> float:
    episodes = prepared.episodes["test"]
    scores = tanp_scores(model, episodes, edit=edit)  # type: ignore[arg-type]
    return float(np.mean(per_user_headline(episodes, scores, threshold=1.0)["NDCG@5"]))


@pytest.mark.trains
def test_training_learns_the_group_structure(prepared: Prepared) -> None:
    """Trained models rank a test user's own-group items first; untrained ones do not.

    A seeded run is reproducible on one machine and thread count only: another CPU family
    takes another floating-point path (README, "Determinism"). So the assertions compare
    means over three training seeds with margins far wider than the spread between kernel
    families (see the measured values by the assertions)."""
    trained, untrained = [], []
    for seed in range(3):
        model_config, train = preset_configs(
            "paper", train={"seed": seed, "epochs": 15, "batch_size": 8, "patience": 0}
        )
        untrained.append(_test_ndcg(prepared, build_untrained(prepared, model_config, train)[0]))
        result = train_model(prepared, model_config=model_config, train=train)
        selection = [record.valid_selection for record in result.history]
        assert result.best_epoch == 1 + selection.index(max(selection))
        trained.append(_test_ndcg(prepared, result.model))
    # measured with the default, avx2 and avx512 kernels: trained 1.000 on every seed,
    # untrained 0.26-0.62 (mean 0.41): the bounds leave margins of 0.1 and 0.39
    assert np.mean(trained) > 0.9, trained
    assert np.mean(trained) > np.mean(untrained) + 0.2, (trained, untrained)


@pytest.mark.trains
def test_the_task_path_alone_learns_the_group_structure(prepared: Prepared) -> None:
    """Without the neighbour affinity only z and the task path can tell a user's group; the
    trained model ranks the own group first, and replacing every user's z and task state by
    the test-set mean (the `mean_task` ablation) undoes it."""
    trained, ablated = [], []
    for seed in range(3):
        model_config, train = preset_configs(
            "paper",
            model={"neighbours": 0},
            train={"seed": seed, "epochs": 25, "batch_size": 8, "patience": 0},
        )
        result = train_model(prepared, model_config=model_config, train=train)
        trained.append(_test_ndcg(prepared, result.model))
        ablated.append(_test_ndcg(prepared, result.model, "mean_task"))
    # measured with the default, avx2 and avx512 kernels: trained 0.96-1.00 (mean >= 0.98),
    # mean_task 0.41-0.50: the bounds leave margins of 0.18 and 0.28
    assert np.mean(trained) > 0.8, trained
    assert np.mean(trained) > np.mean(ablated) + 0.2, (trained, ablated)


def test_cli_train_writes_the_documented_run_directory(trained_run: Path) -> None:
    assert {path.name for path in trained_run.iterdir()} >= {
        "model.safetensors",
        "manifest.json",
        "metrics.json",
        "history.csv",
        "curves.png",
    }
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert set(metrics) == {
        "model", "split", "seed", "best_epoch", "epochs_run", "train_seconds",
        "epoch_seconds_median", "valid", "test", "baselines", "ablations",
    }  # fmt: skip
    for block in ("paper", "standard", "catalog"):
        assert block in metrics["test"] and block in metrics["valid"]
    assert set(metrics["baselines"]) == {"popularity", "item_knn", "ease", "features_lr"}
    assert set(metrics["ablations"]) == {"mean_task", "shuffled_task"}
    assert "shrink" in metrics["baselines"]["item_knn"]["setting"]
    assert "lambda" in metrics["baselines"]["ease"]["setting"]
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


@pytest.mark.trains
def test_cli_prepare_then_train_from_prep(tmp_path: Path, synthetic_csv: Path) -> None:
    prep = tmp_path / "prep"
    assert (
        main(["prepare", "--data", str(synthetic_csv), "--split", "random", "--out", str(prep)])
        == 0
    )
    out = tmp_path / "run"
    status = main(["train", "--prep", str(prep), "--out", str(out), "--epochs", "1", "--quiet"])
    assert status == 0
    result = tmp_path / "eval.json"
    assert main(["evaluate", "--run", str(out), "--data", str(synthetic_csv), "--split", "random",
                 "--out", str(result)]) == 0  # fmt: skip
    evaluated = json.loads(result.read_text())
    assert "test" in evaluated and set(evaluated["ablations"]) == {"mean_task", "shuffled_task"}


def test_cli_reports_bad_data_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item,rating\n1,2,zzz\n")
    status = main(["train", "--data", str(bad), "--split", "random", "--out", str(tmp_path / "r")])
    error = capsys.readouterr().err.strip()
    assert status == 2
    assert error.count("\n") == 0 and "bad.csv:2" in error
