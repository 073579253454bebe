"""One training run end to end: data -> episodes -> train -> evaluate -> run directory.

A run directory is one model version: weights + manifest (tanp.checkpoint), metrics.json (SPEC
section 5), per_user.npz, history.csv and curves.png; the evaluation adds the tuned baselines,
the paired difference to each, the adaptation ablations, the cold-start curve and the uncertainty
measures (SPEC section 4, issue 22).
"""

from __future__ import annotations

import csv
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tanp.checkpoint import build_model, save_checkpoint
from tanp.config import TaNPConfig
from tanp.model import TaNP
from training.baselines import Baselines, BaselineSpec, TunedBaseline, TuningPair
from training.cold_start import MODEL, ColdStartCurve, cold_start_curve
from training.compare import HEADLINE, paired_difference, per_user_headline
from training.config import TrainConfig
from training.episodes import EpisodeSet, Prepared
from training.evaluate import Blocks, TaskEdit, evaluate_scores, tanp_scores
from training.features_logreg import features_logreg_spec
from training.trainer import EpochRecord, Shard, TrainResult, train_model
from training.uncertainty import UncertaintyMeasures, measure_uncertainty, score_spread

logger = logging.getLogger(__name__)

ABLATIONS: tuple[TaskEdit, ...] = ("mean_task", "shuffled_task")
COLD_START_ABLATION: TaskEdit = "mean_task"
UNCERTAINTY_SAMPLES = 16
PER_USER_FILE = "per_user.npz"


@dataclass(frozen=True)
class Scored:
    """One scorer on the test episodes: its metric blocks and per-user headline values."""

    blocks: Blocks
    per_user: dict[str, np.ndarray]


def score(episodes: EpisodeSet, scores: np.ndarray, *, threshold: float) -> Scored:
    return Scored(
        evaluate_scores(episodes, scores, threshold=threshold),
        per_user_headline(episodes, scores, threshold=threshold),
    )


def differences(model: Scored, other: Scored) -> dict[str, dict[str, Any]]:
    """Paired model - other per headline metric, with the 95 % interval and the verdict."""
    return {
        key: paired_difference([model.per_user[key]], [other.per_user[key]]).to_dict()
        for key in HEADLINE
    }


@dataclass(frozen=True)
class TestReport:
    """Everything the test users say about one trained model."""

    model: Scored
    baselines: dict[str, tuple[TunedBaseline, Scored]]
    ablations: dict[str, Scored]
    cold_start: ColdStartCurve | None = None
    uncertainty: UncertaintyMeasures | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "baselines": {
                name: {
                    "setting": tuned.setting,
                    "test": scored.blocks,
                    "difference": differences(self.model, scored),
                }
                for name, (tuned, scored) in self.baselines.items()
            },
            "ablations": {
                name: {"test": scored.blocks, "difference": differences(self.model, scored)}
                for name, scored in self.ablations.items()
            },
            **({"cold_start": self.cold_start.to_dict()} if self.cold_start else {}),
            **({"uncertainty": self.uncertainty.to_dict()} if self.uncertainty else {}),
        }

    def arrays(self, users: np.ndarray) -> dict[str, np.ndarray]:
        """per_user.npz: the test users' indices (`users`), `test/{scorer}/{metric}` for the
        model (`tanp`), every baseline and ablation, and the cold-start and uncertainty arrays;
        what bench/quality.py pools over splits and training seeds."""
        scorers = {
            MODEL: self.model,
            **{name: scored for name, (_, scored) in self.baselines.items()},
            **self.ablations,
        }
        return {
            "users": users,
            **{
                f"test/{name}/{key}": scored.per_user[key]
                for name, scored in scorers.items()
                for key in HEADLINE
            },
            **(self.cold_start.arrays() if self.cold_start else {}),
            **(self.uncertainty.arrays() if self.uncertainty else {}),
        }


def cold_start_report(
    prepared: Prepared,
    model: TaNP,
    *,
    samples: int,
    baselines: Baselines | None,
    extra: Sequence[BaselineSpec] = (),
) -> tuple[ColdStartCurve, UncertaintyMeasures]:
    """The cold-start curve of the model, its `mean_task` ablation and (when given) every
    baseline (and `extra`) re-tuned per support size, and the uncertainty measures on the same
    cut users."""
    curve = cold_start_curve(
        prepared,
        model_scorers={
            MODEL: lambda episodes: tanp_scores(model, episodes, samples=samples),
            COLD_START_ABLATION: lambda episodes: tanp_scores(
                model, episodes, samples=samples, edit=COLD_START_ABLATION
            ),
        },
        baselines=baselines,
        extra=extra,
    )
    measures = measure_uncertainty(
        curve,
        score_spread(model, samples=UNCERTAINTY_SAMPLES),
        threshold=prepared.interactions.positive_threshold,
    )
    return curve, measures


def test_report(
    prepared: Prepared, result: TrainResult, *, samples: int = 0, baselines: bool = True
) -> TestReport:
    """Score the trained model, its ablations and (unless `baselines` is False: demos) every
    tuned baseline on the test users."""
    episodes = prepared.episodes["test"]
    threshold = prepared.interactions.positive_threshold

    def scored(scores: np.ndarray) -> Scored:
        return score(episodes, scores, threshold=threshold)

    model = scored(tanp_scores(result.model, episodes, samples=samples))
    simple = Baselines(prepared) if baselines else None
    tuned = simple.all_tuned() if simple is not None else []
    extra = []
    if simple is not None and (
        result.model.config.item_feature_dim or result.model.config.neighbours
    ):
        extra.append(
            features_logreg_spec(
                prepared,
                result.model,
                profiles=result.data.profiles,
                fold_tensors=result.data.fold_tensors,
                full_tensors=result.data.full_tensors,
                train=result.train,
            )
        )
        pair = TuningPair(prepared.episodes["valid"], episodes)
        tuned += [simple.tune(spec.name, spec.settings, spec.scorer, [pair])[0] for spec in extra]
    curve, measures = cold_start_report(
        prepared, result.model, samples=samples, baselines=simple, extra=extra
    )
    return TestReport(
        model=model,
        baselines={baseline.name: (baseline, scored(baseline.test_scores)) for baseline in tuned},
        ablations={
            edit: scored(tanp_scores(result.model, episodes, samples=samples, edit=edit))
            for edit in ABLATIONS
        },
        cold_start=curve,
        uncertainty=measures,
    )


def evaluate_model(
    model: TaNP, episodes: EpisodeSet, *, threshold: float, samples: int = 0
) -> Blocks:
    return evaluate_scores(
        episodes, tanp_scores(model, episodes, samples=samples), threshold=threshold
    )


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
    device: torch.device | str = "cpu",
    baselines: bool = True,
) -> dict[str, Any] | None:
    """Train, evaluate (valid, test, tuned baselines, paired differences, ablations) and write
    the run directory; returns metrics.json's content (None on a torchrun rank other than 0,
    which only trains)."""
    result = train_model(
        prepared, model_config=model_config, train=train, on_epoch=on_epoch, device=device
    )
    if Shard.current().rank != 0:
        return None
    result = result.on_cpu()
    threshold = prepared.interactions.positive_threshold
    valid = evaluate_model(
        result.model, prepared.episodes["valid"], threshold=threshold, samples=train.eval_samples
    )
    report = test_report(prepared, result, samples=train.eval_samples, baselines=baselines)
    metrics = {
        "model": "tanp",
        "split": prepared.split,
        "seed": prepared.seed if prepared.seed is not None else train.seed,
        "train_seed": train.seed,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        # the selected epoch's validation NDCG@5 over the mean_task ablation's, and whether it
        # cleared train.min_task_gain (false: no epoch did, the best of all was kept)
        "best_epoch_task_gain": finite_or_none(
            result.history[result.best_epoch - 1].valid_task_gain
        ),
        "best_epoch_eligible": result.history[result.best_epoch - 1].eligible,
        "train_seconds": round(result.train_seconds, 2),
        "epoch_seconds_median": round(
            float(np.median([h.train_seconds for h in result.history])), 4
        ),
        "valid": valid,
        "test": report.model.blocks,
        **report.to_dict(),
    }
    out.mkdir(parents=True, exist_ok=True)
    interactions = prepared.interactions
    save_checkpoint(
        out,
        model=result.model,
        items=interactions.item_ids,
        item_names=interactions.item_names,
        item_urls=interactions.item_urls,
        version=out.name,
        train_config=train.to_dict(),
        data=data_provenance(prepared, data),
        metrics=report.model.blocks,
    )
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1) + "\n", encoding="utf-8")
    np.savez_compressed(out / PER_USER_FILE, **report.arrays(prepared.episodes["test"].users))  # type: ignore[arg-type]
    write_history(out / "history.csv", result)
    plot_curves(out / "curves.png", result)
    return metrics


def finite_or_none(value: float) -> float | None:
    return value if np.isfinite(value) else None


def write_history(path: Path, result: TrainResult) -> None:
    rows = [asdict(record) for record in result.history]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]) if rows else ["epoch"])
        writer.writeheader()
        writer.writerows(rows)


def plot_curves(path: Path, result: TrainResult) -> None:
    """Training loss and validation NDCG@5 / Recall@20 per epoch, best epoch marked."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    epochs = [record.epoch for record in result.history]
    figure, (loss_axis, valid_axis) = pyplot.subplots(1, 2, figsize=(10, 3.6))
    loss_axis.plot(epochs, [record.loss for record in result.history], label="total")
    loss_axis.plot(epochs, [record.pointwise for record in result.history], label="pointwise")
    loss_axis.plot(epochs, [record.listwise for record in result.history], label="listwise")
    loss_axis.set_xlabel("epoch")
    loss_axis.set_title("training loss")
    loss_axis.legend()
    valid_axis.plot(epochs, [r.valid_ndcg5 for r in result.history], label="NDCG@5")
    valid_axis.plot(epochs, [r.valid_recall20 for r in result.history], label="Recall@20")
    valid_axis.axvline(
        result.best_epoch, color="grey", linestyle="--", label=f"best epoch {result.best_epoch}"
    )
    valid_axis.set_xlabel("epoch")
    valid_axis.set_title("validation")
    valid_axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=90)
    pyplot.close(figure)


def evaluate_run(run_dir: Path, prepared: Prepared, *, samples: int = 0) -> dict[str, Any]:
    """Re-evaluate a saved run on the prepared episodes (loads through tanp.build_model): the
    model, its ablations, the tuned baselines that need no training episodes, the cold-start
    curve and the uncertainty measures."""
    loaded = build_model(run_dir, "cpu")
    if loaded.items != prepared.interactions.item_ids:
        raise ValueError(f"{run_dir}: the run's item ids differ from the data's")
    threshold = prepared.interactions.positive_threshold
    episodes = prepared.episodes["test"]
    model = score(
        episodes, tanp_scores(loaded.model, episodes, samples=samples), threshold=threshold
    )
    simple = Baselines(prepared)
    baselines = {
        tuned.name: (tuned, score(episodes, tuned.test_scores, threshold=threshold))
        for tuned in simple.all_tuned()
    }
    ablations: dict[str, Scored] = {
        edit: score(
            episodes,
            tanp_scores(loaded.model, episodes, samples=samples, edit=edit),
            threshold=threshold,
        )
        for edit in ABLATIONS
    }
    return {
        "model": "tanp",
        "run": str(run_dir),
        "split": prepared.split,
        "seed": prepared.seed,
        "valid": evaluate_model(
            loaded.model, prepared.episodes["valid"], threshold=threshold, samples=samples
        ),
        "test": model.blocks,
        **TestReport(
            model,
            baselines,
            ablations,
            *cold_start_report(prepared, loaded.model, samples=samples, baselines=simple),
        ).to_dict(),
    }
