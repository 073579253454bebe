"""Quality bench (issue 12): the default preset on the authors' split and random splits 1-5,
next to the tuned baselines on the same episodes, with paired bootstrap 95 % intervals per
split and pooled over splits, the adaptation ablations, and the self-leak check of the
hand-made inputs (training-episode AUC vs validation AUC).

    .venv/bin/python bench/quality.py [--data DIR] [--splits tanp random:1 ...]
        [--train-seeds 1 2 3] [--hetrec-median 1 2 3] [--variants] [--json out.json]

Every model is trained here, selected on validation users only and scored on the test users.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import platform
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.batches import draw_step
from training.compare import HEADLINE, paired_difference
from training.config import DEFAULT_PRESET, preset_configs
from training.data import load_interactions
from training.episodes import Prepared, prepare
from training.features_logreg import affinity_only_state, target_inputs
from training.metrics import auc
from training.run import Scored, test_report
from training.trainer import TrainResult, train_model

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "lastfm"
DEFAULT_SPLITS = ["tanp", "random:1", "random:2", "random:3", "random:4", "random:5"]
FEATURES = ("popularity", "affinity mean liked", "affinity max liked", "affinity mean disliked")

# (label, model overrides, train overrides): each row is the default preset with one change
VARIANTS: list[tuple[str, dict[str, Any], dict[str, Any]]] = [
    ("paper preset (default)", {}, {}),
    ("without the neighbour affinity", {"neighbours": 0}, {}),
    ("affinity never hidden (dropout 0)", {"affinity_dropout": 0.0}, {}),
    ("without the taste head", {"taste_head": False}, {}),
    ("without content factors (tags)", {}, {"content_dim": 0}),
    ("without item factors", {}, {"factor_dim": 0}),
    ("statistics from all train users (self-leak)", {}, {"folds": 0}),
    ("KL weight 0", {}, {"kl_weight": 0.0}),
    ("KL weight 1 (the paper's)", {}, {"kl_weight": 1.0}),
    ("pointwise loss only", {}, {"listwise_weight": 0.0, "pointwise_weight": 1.0}),
    ("no modulation (plain decoder)", {"decoder": "none"}, {}),
    ("reference preset (the notebook)", {"__preset__": "reference"}, {}),
]


@dataclass
class SplitResult:
    name: str
    seconds: float
    best_epoch: int
    model: Scored
    others: dict[str, Scored] = field(default_factory=dict)
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)


def feature_aucs(prepared: Prepared, result: TrainResult) -> dict[str, tuple[float, float]]:
    """Mean per-episode AUC of each hand-made input: training episodes (as the trainer draws
    them, fold tables) vs validation episodes (all train users' tables)."""
    model = result.model
    threshold = prepared.interactions.positive_threshold
    popularity_column = model.config.item_feature_dim - 1

    def per_episode(
        values: torch.Tensor, positive: torch.Tensor, mask: torch.Tensor
    ) -> list[list[float]]:
        rows: list[list[float]] = [[] for _ in FEATURES]
        columns = [popularity_column, *range(values.shape[-1] - 3, values.shape[-1])]
        for episode in range(values.shape[0]):
            keep = mask[episode]
            for index, column in enumerate(columns):
                value = auc(values[episode, keep, column].numpy(), positive[episode, keep].numpy())
                if value is not None:
                    rows[index].append(value)
        return rows

    train_rows: list[list[float]] = [[] for _ in FEATURES]
    generator = torch.Generator().manual_seed(0)
    profiles = result.data.profiles
    with torch.no_grad():
        for fold, tensors in enumerate(result.data.fold_tensors):
            tensors.install(model)
            members = torch.nonzero(profiles.folds == fold).flatten()
            batch = draw_step(
                profiles, members, train=result.train, num_items=model.config.num_items,
                threshold=threshold, generator=generator, z_dim=0, affinity_dropout=0.0,
                unknown_user=None,
            )  # fmt: skip
            state = affinity_only_state(
                batch.support_items, batch.support_labels, batch.support_mask
            )
            values = target_inputs(model, state, batch.target_items)
            for index, row in enumerate(per_episode(values, batch.positive, batch.target_mask)):
                train_rows[index].extend(row)
        result.data.full_tensors.install(model)
        valid = prepared.episodes["valid"]
        width = int(valid.support_len.max())
        state = affinity_only_state(
            torch.from_numpy(valid.support_items[:, :width]),
            torch.from_numpy(valid.support_labels[:, :width]),
            torch.arange(width)[None, :] < torch.from_numpy(valid.support_len)[:, None],
        )
        query = torch.from_numpy(valid.query_items)
        values = target_inputs(model, state, query)
        positive = torch.from_numpy(valid.query_labels >= threshold)
        mask = torch.arange(query.shape[1])[None, :] < torch.from_numpy(valid.query_len)[:, None]
        valid_rows = per_episode(values, positive, mask)
    return {
        name: (float(np.mean(train_rows[index])), float(np.mean(valid_rows[index])))
        for index, name in enumerate(FEATURES)
    }


# --keep DIR: each finished run is pickled there (this bench's own files) and reused when the
# same run is asked again, so a long run that stops half-way resumes instead of restarting.
KEEP: Path | None = None


def run_split(
    prepared: Prepared, name: str, *, model: dict[str, Any], train: dict[str, Any], leak: bool
) -> tuple[SplitResult, dict[str, tuple[float, float]] | None]:
    key = json.dumps([name, model, train, leak], sort_keys=True)
    kept = KEEP / f"{hashlib.sha256(key.encode()).hexdigest()[:16]}.pkl" if KEEP else None
    if kept is not None and kept.exists():
        with kept.open("rb") as handle:
            return pickle.load(handle)  # type: ignore[no-any-return]  # only this bench writes these
    outcome = train_and_report(prepared, name, model=model, train=train, leak=leak)
    if kept is not None:
        kept.parent.mkdir(parents=True, exist_ok=True)
        with kept.open("wb") as handle:
            pickle.dump(outcome, handle)
    return outcome


def train_and_report(
    prepared: Prepared, name: str, *, model: dict[str, Any], train: dict[str, Any], leak: bool
) -> tuple[SplitResult, dict[str, tuple[float, float]] | None]:
    model = dict(model)
    preset = model.pop("__preset__", DEFAULT_PRESET)
    model_config, train_config = preset_configs(preset, model=model, train=train)
    started = time.perf_counter()
    result = train_model(prepared, model_config=model_config, train=train_config)
    report = test_report(prepared, result)
    split = SplitResult(name, time.perf_counter() - started, result.best_epoch, report.model)
    for baseline, (tuned, scored) in report.baselines.items():
        split.others[baseline] = scored
        split.settings[baseline] = tuned.setting
    for edit, scored in report.ablations.items():
        split.others[edit] = scored
    aucs = feature_aucs(prepared, result) if leak and result.model.config.neighbours else None
    return split, aucs


def mean_of(scored: Scored, key: str) -> float:
    return float(np.nanmean(scored.per_user[key]))


def print_table(results: list[SplitResult], title: str) -> dict[str, Any]:
    """Per split values, means over splits, and pooled paired differences model - other."""
    names = list(results[0].others)
    print(f"\n### {title}\n")
    header = (
        "| scorer | "
        + " | ".join(r.name for r in results)
        + " | mean | pooled model - scorer, 95 % CI |"
    )
    print(header)
    print("|---" * (len(results) + 3) + "|")
    table: dict[str, Any] = {"splits": [r.name for r in results], "rows": {}}
    for scorer in ["model", *names]:
        cells, pooled = [], []
        for key in HEADLINE:
            values = [
                mean_of(r.model if scorer == "model" else r.others[scorer], key) for r in results
            ]
            cells.append(values)
            if scorer != "model":
                pooled.append(
                    paired_difference(
                        [r.model.per_user[key] for r in results],
                        [r.others[scorer].per_user[key] for r in results],
                    )
                )
        per_split = [f"{cells[0][i]:.3f} / {cells[1][i]:.3f}" for i in range(len(results))]
        mean = f"{np.mean(cells[0]):.3f} / {np.mean(cells[1]):.3f}"
        ci = (
            " ; ".join(
                f"{key} {diff} {diff.verdict}" for key, diff in zip(HEADLINE, pooled, strict=True)
            )
            if pooled
            else ""
        )
        print(f"| {scorer} | " + " | ".join(per_split) + f" | {mean} | {ci} |")
        table["rows"][scorer] = {
            "per_split": {key: cells[i] for i, key in enumerate(HEADLINE)},
            "pooled_difference": {
                key: diff.to_dict() for key, diff in zip(HEADLINE, pooled, strict=False)
            },
        }
    print("\nper split, model - scorer (NDCG@5 ; Recall@20):")
    for scorer in names:
        parts = []
        for r in results:
            diffs = [
                paired_difference([r.model.per_user[k]], [r.others[scorer].per_user[k]])
                for k in HEADLINE
            ]
            parts.append(f"{r.name}: {diffs[0]} ; {diffs[1]}")
        print(f"- {scorer}: " + " | ".join(parts))
    return table


def load_split(data: Path, spec: str) -> tuple[str, Prepared]:
    kind, _, seed = spec.partition(":")
    if kind == "hetrec-median":
        interactions = load_interactions(data, "hetrec-median")
    else:
        interactions = load_interactions(data)
    prepared = prepare(interactions, split=kind, seed=int(seed or 2020), directory=data)  # type: ignore[arg-type]
    return spec, prepared


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--splits", nargs="*", default=DEFAULT_SPLITS)
    parser.add_argument("--train-seeds", type=int, nargs="*", default=[])
    parser.add_argument("--hetrec-median", type=int, nargs="*", default=[])
    parser.add_argument("--variants", action="store_true", help="the one-change ablation table")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--keep", type=Path, default=None, help="reuse/keep finished runs here")
    args = parser.parse_args()
    global KEEP
    KEEP = args.keep
    print(
        f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}"
    )
    report: dict[str, Any] = {}
    started = time.perf_counter()
    results, leaks = [], {}
    for spec in args.splits:
        name, prepared = load_split(args.data, spec)
        result, aucs = run_split(prepared, name, model={}, train={}, leak=True)
        results.append(result)
        leaks[name] = aucs
        print(f"{name}: {result.seconds:.0f} s, best epoch {result.best_epoch}, model "
              f"{mean_of(result.model, 'NDCG@5'):.3f} / {mean_of(result.model, 'Recall@20'):.3f}",
              flush=True)  # fmt: skip
    if results:
        report["default"] = print_table(results, f"{DEFAULT_PRESET} preset, NDCG@5 / Recall@20")
        report["settings"] = {r.name: r.settings for r in results}
        print("\nself-leak check, mean per-episode AUC (training episodes / validation):")
        for name, aucs in leaks.items():
            if aucs:
                print(
                    f"- {name}: "
                    + ", ".join(f"{f} {t:.3f} / {v:.3f}" for f, (t, v) in aucs.items())
                )
        report["feature_auc"] = leaks
        print(f"\nwhole default run: {time.perf_counter() - started:.0f} s")
    for label, seeds in (("training seed", args.train_seeds),):
        if seeds:
            name, prepared = load_split(args.data, "tanp")
            seeded = []
            for seed in seeds:
                result, _ = run_split(
                    prepared, f"seed {seed}", model={}, train={"seed": seed}, leak=False
                )
                seeded.append(result)
            report["train_seeds"] = print_table(seeded, f"`--split tanp`, {label}s {seeds}")
    if args.hetrec_median:
        hetrec = []
        for seed in args.hetrec_median:
            name, prepared = load_split(args.data, f"hetrec-median:{seed}")
            result, _ = run_split(prepared, name, model={}, train={}, leak=False)
            hetrec.append(result)
            print(f"{name}: {result.seconds:.0f} s", flush=True)
        report["hetrec_median"] = print_table(hetrec, "`--split hetrec-median`, NDCG@5 / Recall@20")
    if args.variants:
        name, prepared = load_split(args.data, "tanp")
        print("\n### One change at a time, `--split tanp` (test NDCG@5 / Recall@20)\n")
        print("| variant | valid-selected test NDCG@5 | Recall@20 | train s |\n|---|---|---|---|")
        rows = {}
        for label, model, train in VARIANTS:
            result, _ = run_split(prepared, label, model=model, train=train, leak=False)
            rows[label] = [mean_of(result.model, key) for key in HEADLINE]
            print(
                f"| {label} | {rows[label][0]:.3f} | {rows[label][1]:.3f} | {result.seconds:.0f} |",
                flush=True,
            )
        report["variants"] = rows
    if args.json:
        args.json.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")


if __name__ == "__main__":
    main()
