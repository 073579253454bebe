"""One training run end to end: data -> episodes -> train -> evaluate -> run directory.

A run directory is one model version: model.safetensors + manifest.json (tanp.checkpoint),
metrics.json (SPEC section 5 shape), history.csv and curves.png.
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from tanp.checkpoint import build_model, save_checkpoint
from tanp.model import TaNP, TaNPConfig
from training.baselines import item_knn_scores, popularity_scores
from training.episodes import EpisodeSet, Prepared
from training.evaluate import Blocks, evaluate_scores, tanp_scores
from training.trainer import EpochRecord, TrainConfig, TrainResult, train_model

logger = logging.getLogger(__name__)


def evaluate_model(
    model: TaNP, episodes: EpisodeSet, *, threshold: float, samples: int = 0
) -> Blocks:
    return evaluate_scores(
        episodes, tanp_scores(model, episodes, samples=samples), threshold=threshold
    )


def evaluate_baselines(prepared: Prepared, episodes: EpisodeSet) -> dict[str, dict[str, Blocks]]:
    threshold = prepared.interactions.positive_threshold
    return {
        "popularity": {
            "test": evaluate_scores(
                episodes, popularity_scores(prepared, episodes), threshold=threshold
            )
        },
        "item_knn": {
            "test": evaluate_scores(
                episodes, item_knn_scores(prepared, episodes), threshold=threshold
            )
        },
    }


def data_provenance(prepared: Prepared, data: Path) -> dict[str, Any]:
    source = prepared.interactions.source
    return {
        "source": str(data),
        "format": source.get("format"),
        "sha256": source.get("sha256"),
        "split": prepared.split,
        "seed": prepared.seed,
        "episodes": {name: len(episodes) for name, episodes in prepared.episodes.items()},
    }


def train_run(
    prepared: Prepared,
    *,
    data: Path,
    out: Path,
    model_config: TaNPConfig,
    train: TrainConfig,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> dict[str, Any]:
    """Train, evaluate (valid, test, baselines on test) and write the run directory."""
    result = train_model(prepared, model_config=model_config, train=train, on_epoch=on_epoch)
    threshold = prepared.interactions.positive_threshold
    valid = evaluate_model(
        result.model, prepared.episodes["valid"], threshold=threshold, samples=train.eval_samples
    )
    test = evaluate_model(
        result.model, prepared.episodes["test"], threshold=threshold, samples=train.eval_samples
    )
    metrics = {
        "model": "tanp",
        "split": prepared.split,
        "seed": prepared.seed if prepared.seed is not None else train.seed,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "train_seconds": round(result.train_seconds, 2),
        "epoch_seconds_median": round(
            float(np.median([h.train_seconds for h in result.history])), 4
        ),
        "valid": valid,
        "test": test,
        "baselines": evaluate_baselines(prepared, prepared.episodes["test"]),
    }
    out.mkdir(parents=True, exist_ok=True)
    save_checkpoint(
        out,
        model=result.model,
        items=prepared.interactions.item_ids,
        item_names=prepared.interactions.item_names,
        version=out.name,
        train_config=train.to_dict(),
        data=data_provenance(prepared, data),
        metrics=test,
    )
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n", encoding="utf-8")
    write_history(out / "history.csv", result)
    plot_curves(out / "curves.png", result)
    return metrics


def write_history(path: Path, result: TrainResult) -> None:
    rows = [asdict(record) for record in result.history]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["epoch"])
        writer.writeheader()
        writer.writerows(rows)


def plot_curves(path: Path, result: TrainResult) -> None:
    """Training loss and validation NDCG@5 per epoch, best epoch marked."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    epochs = [record.epoch for record in result.history]
    figure, (loss_axis, ndcg_axis) = pyplot.subplots(1, 2, figsize=(10, 3.6))
    loss_axis.plot(epochs, [record.loss for record in result.history], label="total")
    loss_axis.plot(epochs, [record.mse for record in result.history], label="MSE")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_title("training loss")
    loss_axis.legend()
    ndcg_axis.plot(epochs, [record.valid_ndcg5 for record in result.history], color="tab:green")
    ndcg_axis.axvline(
        result.best_epoch, color="grey", linestyle="--", label=f"best epoch {result.best_epoch}"
    )
    ndcg_axis.set_xlabel("epoch")
    ndcg_axis.set_title("validation NDCG@5")
    ndcg_axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    pyplot.close(figure)


def evaluate_run(run_dir: Path, prepared: Prepared, *, samples: int = 0) -> dict[str, Any]:
    """Re-evaluate a saved run on the prepared episodes (loads through tanp.build_model)."""
    loaded = build_model(run_dir, "cpu")
    if loaded.items != prepared.interactions.item_ids:
        raise ValueError(f"{run_dir}: the run's item ids differ from the data's")
    threshold = prepared.interactions.positive_threshold
    return {
        "model": "tanp",
        "run": str(run_dir),
        "split": prepared.split,
        "seed": prepared.seed,
        "valid": evaluate_model(
            loaded.model, prepared.episodes["valid"], threshold=threshold, samples=samples
        ),
        "test": evaluate_model(
            loaded.model, prepared.episodes["test"], threshold=threshold, samples=samples
        ),
        "baselines": evaluate_baselines(prepared, prepared.episodes["test"]),
    }
