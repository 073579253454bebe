"""Quality bench (issues 12, 22): the default preset on the authors' split and random splits 1-5,
next to the tuned baselines on the same episodes, with paired bootstrap 95 % intervals per
split and pooled over splits (and training seeds), the adaptation ablations, the cold-start
curve (support cut to n = 1..20, baselines re-tuned per n), the uncertainty measures, and the
self-leak check of the hand-made inputs (training-episode AUC vs validation AUC).

    .venv/bin/python bench/quality.py [--data DIR] [--splits tanp random:1 ...] [--seeds 1 2]
        [--train-seeds 1 2 3] [--hetrec-median 1 2 3] [--variants] [--json out.json]
        [--keep DIR] [--runs DIR ...] [--reference DIR ...] [--no-leak]

Every model is trained here, selected on validation users only and scored on the test users,
unless `--runs` names run directories already written by `tanp-train train` (their
metrics.json and per_user.npz): then nothing is trained. `--reference` names the runs of
another model (e.g. main's) and prints this model minus that one, paired per test user. A run
directory without per_user.npz (older code) has its model re-scored on the `--data` split it
names (the model and its mean_task ablation, no baselines).

Several training seeds: a split's per-user values are averaged over its seeds before the paired
bootstrap (users resampled within their split, each user's seeds kept together), so the interval
covers the users and the seed-averaged training noise.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import pickle
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tanp.checkpoint import build_model
from training.batches import draw_step
from training.cold_start import MODEL, ColdStartCurve
from training.compare import HEADLINE, Difference, paired_difference
from training.config import DEFAULT_PRESET, preset_configs
from training.data import load_interactions
from training.episodes import Prepared, prepare
from training.evaluate import tanp_scores
from training.features_logreg import affinity_only_state, target_inputs
from training.metrics import auc
from training.run import PER_USER_FILE, Scored, cold_start_report, score, test_report
from training.trainer import TrainResult, train_model
from training.uncertainty import UncertaintyMeasures

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
    """One trained model on one split: its test users' per-user values and everything beside."""

    name: str
    seconds: float
    best_epoch: int
    model: Scored
    others: dict[str, Scored] = field(default_factory=dict)
    settings: dict[str, dict[str, Any]] = field(default_factory=dict)
    seed: int | None = None  # the training seed
    users: np.ndarray | None = None  # the test users, in the per-user arrays' order
    cold_start: ColdStartCurve | None = None
    uncertainty: UncertaintyMeasures | None = None


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
    split = SplitResult(
        name,
        time.perf_counter() - started,
        result.best_epoch,
        report.model,
        seed=train_config.seed,
        users=prepared.episodes["test"].users,
        cold_start=report.cold_start,
        uncertainty=report.uncertainty,
    )
    for baseline, (tuned, scored) in report.baselines.items():
        split.others[baseline] = scored
        split.settings[baseline] = tuned.setting
    for edit, scored in report.ablations.items():
        split.others[edit] = scored
    aucs = feature_aucs(prepared, result) if leak and result.model.config.neighbours else None
    return split, aucs


def mean_of(scored: Scored, key: str) -> float:
    return float(np.nanmean(scored.per_user[key]))


def grouped(results: list[SplitResult]) -> dict[str, list[SplitResult]]:
    """Results by split name (several training seeds of one split together), in order."""
    groups: dict[str, list[SplitResult]] = {}
    for result in results:
        groups.setdefault(result.name, []).append(result)
    for name, group in groups.items():
        users = [r.users for r in group if r.users is not None]
        if any(not np.array_equal(users[0], other) for other in users[1:]):
            raise ValueError(f"{name}: the runs of this split have different test users")
    return groups


def seed_mean(arrays: list[np.ndarray]) -> np.ndarray:
    """(users,) each user's mean over a split's seeds (NaN where every seed is NaN)."""
    stacked = np.stack([np.asarray(values, dtype=np.float64) for values in arrays])
    defined = (~np.isnan(stacked)).sum(axis=0)
    total = np.nansum(stacked, axis=0)
    return np.where(defined > 0, total / np.maximum(defined, 1), np.nan)


Values = Callable[[SplitResult], np.ndarray]  # a run -> per-user values of one scorer


def test_values(scorer: str, key: str) -> Values:
    """`scorer`'s per-user `key` on the test users ("model" for the model)."""
    if scorer == "model":
        return lambda r: r.model.per_user[key]
    return lambda r: r.others[scorer].per_user[key]


def curve_values(scorer: str, size: int, key: str) -> Values:
    """`scorer`'s per-user `key` with the support cut to `size`."""

    def values(result: SplitResult) -> np.ndarray:
        assert result.cold_start is not None
        return result.cold_start.per_user[scorer][size][key]

    return values


def pooled_difference(results: list[SplitResult], first: Values, second: Values) -> Difference:
    """first - second, paired per user: seeds averaged per user, users resampled within their
    split, pooled over splits."""
    groups = grouped(results).values()
    return paired_difference(
        [seed_mean([first(r) for r in group]) for group in groups],
        [seed_mean([second(r) for r in group]) for group in groups],
    )


def pooled_mean(results: list[SplitResult], values: Values) -> float:
    """Mean over every user of every split, each user's seeds averaged first."""
    return float(
        np.nanmean(
            np.concatenate(
                [seed_mean([values(r) for r in group]) for group in grouped(results).values()]
            )
        )
    )


def print_table(results: list[SplitResult], title: str) -> dict[str, Any]:
    """Per split values (mean over its seeds), means over splits, and pooled paired
    differences model - other."""
    groups = grouped(results)
    names = list(results[0].others)
    print(f"\n### {title}\n")
    seeds = max(len(group) for group in groups.values())
    if seeds > 1:
        print(f"({seeds} training seeds per split: per-user values averaged over seeds)\n")
    header = "| scorer | " + " | ".join(groups) + " | mean | pooled model - scorer, 95 % CI |"
    print(header)
    print("|---" * (len(groups) + 3) + "|")
    table: dict[str, Any] = {"splits": list(groups), "rows": {}}
    for scorer in ["model", *names]:
        cells, pooled = [], []
        for key in HEADLINE:
            values = [
                float(np.mean([np.nanmean(test_values(scorer, key)(r)) for r in group]))
                for group in groups.values()
            ]
            cells.append(values)
            if scorer != "model":
                pooled.append(
                    pooled_difference(results, test_values("model", key), test_values(scorer, key))
                )
        per_split = [f"{cells[0][i]:.3f} / {cells[1][i]:.3f}" for i in range(len(groups))]
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
        for name, group in groups.items():
            diffs = [
                pooled_difference(group, test_values("model", k), test_values(scorer, k))
                for k in HEADLINE
            ]
            parts.append(f"{name}: {diffs[0]} ; {diffs[1]}")
        print(f"- {scorer}: " + " | ".join(parts))
    return table


def print_cold_start(results: list[SplitResult], title: str) -> dict[str, Any]:
    """The cold-start curve pooled over splits (and seeds): each scorer's NDCG@5 / Recall@20
    at each n, then the model minus each scorer with its paired 95 % interval."""
    curved = [r for r in results if r.cold_start is not None]
    if not curved:
        return {}
    curves = [r.cold_start for r in curved if r.cold_start is not None]
    sizes = [size for size in curves[0].sizes if all(size in c.sizes for c in curves)]
    names = [name for name in curves[0].per_user if all(name in c.per_user for c in curves)]

    print(f"\n### {title}: NDCG@5 / catalog Recall@20 with the support cut to n items\n")
    print("| scorer | " + " | ".join(f"n = {size}" for size in sizes) + " |")
    print("|---" * (len(sizes) + 1) + "|")
    table: dict[str, Any] = {"sizes": sizes, "splits": list(grouped(curved)), "rows": {}}
    for name in names:
        means = {
            size: [pooled_mean(curved, curve_values(name, size, key)) for key in HEADLINE]
            for size in sizes
        }
        print(
            f"| {name} | "
            + " | ".join(f"{means[size][0]:.3f} / {means[size][1]:.3f}" for size in sizes)
            + " |"
        )
        table["rows"][name] = {"mean": {str(size): means[size] for size in sizes}}
    for key in HEADLINE:
        print(f"\n{MODEL} minus scorer, {key}, paired 95 % CI pooled over splits:\n")
        print("| scorer | " + " | ".join(f"n = {size}" for size in sizes) + " |")
        print("|---" * (len(sizes) + 1) + "|")
        for name in names:
            if name == MODEL:
                continue
            cells = []
            for size in sizes:
                diff = pooled_difference(
                    curved, curve_values(MODEL, size, key), curve_values(name, size, key)
                )
                cells.append(f"{diff} {diff.verdict}")
                table["rows"][name].setdefault("difference", {}).setdefault(key, {})[str(size)] = (
                    diff.to_dict()
                )
            print(f"| {name} | " + " | ".join(cells) + " |")
    return table


def print_uncertainty(results: list[SplitResult], title: str) -> dict[str, Any]:
    """The uncertainty measures over every (seed, user) of every split together."""
    parts = [r.uncertainty for r in results if r.uncertainty is not None]
    if not parts:
        return {}
    section = UncertaintyMeasures.pooled(parts).to_dict()
    print(f"\n### {title}: the model's uncertainty (the API's score spread over draws of z)\n")
    print("| n | mean uncertainty | Spearman vs NDCG@5 (target <= -0.3) | "
          "within-top-20 AUC, confident = hit (target >= 0.6) |")  # fmt: skip
    print("|---|---|---|---|")
    for size in section["sizes"]:
        key = str(size)
        print(
            f"| {size} | {section['mean'][key]:.4f} | {section['spearman_ndcg5'][key]:+.3f} | "
            f"{section['hit_auc'][key]:.3f} |"
        )
    shrink = section["shrink_fraction"]
    print(
        f"\nusers whose uncertainty shrinks from n = {shrink['from']} to n = {shrink['to']}: "
        f"{shrink['value']:.1%} (target >= {shrink['target']:.0%}); Spearman pooled over every n: "
        f"{section['spearman_ndcg5']['all_sizes']:+.3f}; {len(parts)} runs, "
        f"{parts[0].user[section['sizes'][0]].size if len(parts) == 1 else 'pooled'} users"
    )
    return section


def print_reference(
    results: list[SplitResult], reference: list[SplitResult], title: str
) -> dict[str, Any]:
    """This model minus the reference model, paired per test user on the splits both have:
    the test headline metrics and the cold-start curve."""
    ours, theirs = grouped(results), grouped(reference)
    common = [name for name in ours if name in theirs]
    if not common:
        print("\nreference: no split in common with these runs")
        return {}
    for name in common:
        if not np.array_equal(ours[name][0].users, theirs[name][0].users):  # type: ignore[arg-type]
            raise ValueError(f"{name}: the reference runs have other test users")
    pairs = [(ours[name], theirs[name]) for name in common]

    def difference(value: Callable[[SplitResult], np.ndarray]) -> Difference:
        return paired_difference(
            [seed_mean([value(r) for r in mine]) for mine, _ in pairs],
            [seed_mean([value(r) for r in other]) for _, other in pairs],
        )

    print(f"\n### {title}: this model minus the reference, splits {', '.join(common)}\n")
    print("| | " + " | ".join(f"{key}, 95 % CI" for key in HEADLINE) + " |\n|---|---|---|")
    table: dict[str, Any] = {"splits": common, "rows": {}}
    rows: list[tuple[str, dict[str, Values]]] = [
        ("test (full support)", {key: test_values("model", key) for key in HEADLINE})
    ]
    curves = [r.cold_start for r in [*results, *reference] if r.cold_start is not None]
    if len(curves) == len(results) + len(reference):
        for size in sorted(set.intersection(*[set(curve.sizes) for curve in curves])):
            rows.append((f"n = {size}", {key: curve_values(MODEL, size, key) for key in HEADLINE}))
    for label, values in rows:
        diffs = {key: difference(values[key]) for key in HEADLINE}
        print(f"| {label} | " + " | ".join(f"{d} {d.verdict}" for d in diffs.values()) + " |")
        table["rows"][label] = {key: diff.to_dict() for key, diff in diffs.items()}
    return table


def load_run(directory: Path) -> SplitResult:
    """A run directory written by `tanp-train train` (metrics.json + per_user.npz)."""
    metrics = json.loads((directory / "metrics.json").read_text(encoding="utf-8"))
    with np.load(directory / PER_USER_FILE, allow_pickle=False) as handle:
        arrays = {key: handle[key] for key in handle.files}

    def scored(name: str, blocks: dict[str, Any]) -> Scored:
        return Scored(blocks, {key: arrays[f"test/{name}/{key}"] for key in HEADLINE})

    split = metrics["split"]
    result = SplitResult(
        "tanp" if split == "tanp" else f"{split}:{metrics['seed']}",
        float(metrics["train_seconds"]),
        int(metrics["best_epoch"]),
        scored(MODEL, metrics["test"]),
        seed=metrics.get("train_seed"),
        users=arrays["users"],
        cold_start=ColdStartCurve.from_arrays(arrays) if "cold_start" in metrics else None,
        uncertainty=UncertaintyMeasures.from_arrays(arrays),
    )
    for name, entry in metrics["baselines"].items():
        result.others[name] = scored(name, entry["test"])
        result.settings[name] = entry.get("setting", {})
    for name, entry in metrics["ablations"].items():
        result.others[name] = scored(name, entry["test"])
    return result


def evaluate_saved(directory: Path, data: Path) -> SplitResult:
    """A run directory without per_user.npz (written by older code, e.g. main's reference
    runs): its model re-scored on its split's test users (no baselines), the cold-start curve
    of the model and its mean_task ablation, and the uncertainty measures."""
    manifest = json.loads((directory / "manifest.json").read_text(encoding="utf-8"))
    split, seed = manifest["data"]["split"], manifest["data"]["seed"]
    name, prepared = load_split(data, "tanp" if split == "tanp" else f"{split}:{seed}")
    loaded = build_model(directory, "cpu")
    if loaded.items != prepared.interactions.item_ids:
        raise SystemExit(f"{directory}: its item ids differ from {data}'s")
    episodes = prepared.episodes["test"]
    threshold = prepared.interactions.positive_threshold
    model = score(episodes, tanp_scores(loaded.model, episodes), threshold=threshold)
    curve, measures = cold_start_report(prepared, loaded.model, samples=0, baselines=None)
    metrics_path = directory / "metrics.json"
    metrics = json.loads(metrics_path.read_text(encoding="utf-8")) if metrics_path.is_file() else {}
    result = SplitResult(
        name, float(metrics.get("train_seconds", 0.0)), int(metrics.get("best_epoch", 0)), model,
        seed=manifest["train_config"]["seed"], users=episodes.users, cold_start=curve,
        uncertainty=measures,
    )  # fmt: skip
    result.others["mean_task"] = score(
        episodes, tanp_scores(loaded.model, episodes, edit="mean_task"), threshold=threshold
    )
    return result


def find_runs(paths: list[Path], data: Path) -> list[SplitResult]:
    """Every run directory at or under `paths`: read from its per_user.npz, or re-scored with
    `evaluate_saved` when it has none."""
    found = []
    for path in paths:
        for manifest in sorted(path.rglob("manifest.json")):
            directory = manifest.parent
            if (directory / PER_USER_FILE).is_file() and (directory / "metrics.json").is_file():
                found.append(load_run(directory))
            else:
                print(f"{directory}: no {PER_USER_FILE}, re-scoring its model", flush=True)
                found.append(evaluate_saved(directory, data))
    if not found:
        raise SystemExit(f"no run directory (manifest.json) under {', '.join(map(str, paths))}")
    return found


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
    parser.add_argument(
        "--seeds",
        type=int,
        nargs="*",
        default=[],
        help="training seeds for every split of --splits (default: the preset's one seed)",
    )
    parser.add_argument(
        "--runs",
        type=Path,
        nargs="*",
        default=[],
        help="run directories of `tanp-train train` (or folders holding them): tables from "
        "their metrics.json and per_user.npz instead of training --splits here",
    )
    parser.add_argument(
        "--reference",
        type=Path,
        nargs="*",
        default=[],
        help="run directories of a reference model: this model minus it, paired per user",
    )
    args = parser.parse_args()
    global KEEP
    KEEP = args.keep
    print(
        f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, "
        f"torch {torch.__version__}"
    )
    report: dict[str, Any] = {}
    started = time.perf_counter()
    results: list[SplitResult] = []
    leaks: dict[str, dict[str, tuple[float, float]] | None] = {}
    if args.runs:
        results = find_runs(args.runs, args.data)
        for result in results:
            print(f"{result.name} (training seed {result.seed}): {result.seconds:.0f} s, best "
                  f"epoch {result.best_epoch}, model {mean_of(result.model, 'NDCG@5'):.3f} / "
                  f"{mean_of(result.model, 'Recall@20'):.3f}")  # fmt: skip
    for spec in [] if args.runs else args.splits:
        name, prepared = load_split(args.data, spec)
        for index, seed in enumerate(args.seeds or [None]):
            train = {} if seed is None else {"seed": seed}
            result, aucs = run_split(prepared, name, model={}, train=train, leak=index == 0)
            results.append(result)
            if index == 0:
                leaks[name] = aucs
            print(f"{name} (training seed {result.seed}): {result.seconds:.0f} s, best epoch "
                  f"{result.best_epoch}, model {mean_of(result.model, 'NDCG@5'):.3f} / "
                  f"{mean_of(result.model, 'Recall@20'):.3f}", flush=True)  # fmt: skip
    if results:
        report["default"] = print_table(results, f"{DEFAULT_PRESET} preset, NDCG@5 / Recall@20")
        report["settings"] = {f"{r.name} seed {r.seed}": r.settings for r in results}
        report["cold_start"] = print_cold_start(results, "Cold start, pooled")
        report["uncertainty"] = print_uncertainty(results, "Uncertainty, pooled")
        if args.reference:
            report["reference"] = print_reference(
                results, find_runs(args.reference, args.data), "Against the reference runs"
            )
        if leaks:
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
