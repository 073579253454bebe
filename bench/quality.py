"""Quality tables: the ablation on the authors' split and the best preset on random splits.

Every row is trained here, selected on validation users only, and scored on the test users'
episodes next to popularity and item-kNN on the same episodes. Prints markdown tables.

    .venv/bin/python bench/quality.py [--data DIR] [--seeds 1 2 3 4 5] [--skip-ablation]
"""

from __future__ import annotations

import argparse
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tanp.model import TaNPConfig
from training.data import load_interactions
from training.episodes import Prepared, prepare
from training.presets import preset_configs
from training.run import evaluate_baselines, evaluate_model
from training.trainer import TrainConfig, train_model

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "lastfm"
KEYS = (("paper", "P@5"), ("paper", "NDCG@5"), ("paper", "MAP@5"), ("catalog", "Recall@20"))


def configs(
    name: str, model: dict[str, Any] | None = None, train: dict[str, Any] | None = None
) -> tuple[TaNPConfig, TrainConfig]:
    return preset_configs(name, model=model, train=train)


ABLATION: list[tuple[str, str, dict[str, Any], dict[str, Any]]] = [
    ("reference preset (notebook dims, lr 1e-4, 150 epochs)", "reference", {}, {}),
    ("  + the reference's clustering bug (all-ones target)", "reference", {},
     {"clustering_target": "reference"}),
    ("reference + FiLM centred at identity, lr 1e-3, early stop", "reference",
     {"film_gamma_offset": 1.0}, {"lr": 1e-3, "patience": 40}),
    ("  + episodes for all 1,310 train users", "reference",
     {"film_gamma_offset": 1.0}, {"lr": 1e-3, "patience": 20, "epochs": 60, "all_train_users": True}),
    ("  + item priors (popularity, closeness) as decoder inputs", "reference",
     {"film_gamma_offset": 1.0, "embedding_init_std": 0.1, "second_embedding_dim": 8},
     {"lr": 1e-3, "patience": 20, "epochs": 60, "all_train_users": True, "item_prior": True}),
    ("  + item-neighbour affinity (mean/max similarity to the support)", "reference",
     {"film_gamma_offset": 1.0, "embedding_init_std": 0.1, "second_embedding_dim": 8,
      "neighbours": 400},
     {"lr": 1e-3, "patience": 20, "epochs": 60, "all_train_users": True, "item_prior": True}),
    ("  + train.sh dimensions (clusters 7)", "paper",
     {"user_input": "none", "item_id_input": True}, {}),
    ("  + shared unknown-user embedding", "paper", {"item_id_input": True}, {}),
    ("  + no item-id embedding = **paper preset (default)**", "paper", {}, {}),
    ("paper, no user input instead of the unknown-user embedding", "paper", {"user_input": "none"}, {}),
    ("paper, attention over the support instead of the mean", "paper", {"aggregator": "attention"}, {}),
    ("paper, Gating-FiLM decoder", "paper", {"decoder": "gating_film"}, {}),
    ("paper, no modulation (plain decoder)", "paper", {"decoder": "none"}, {}),
    ("paper, train.sh's 10 clusters", "paper", {"clusters_k": 10}, {}),
    ("paper, affinity inputs scaled by 10", "paper", {"affinity_scale": 10.0}, {}),
    ("paper, own co-occurrences removed from train users' affinities", "paper", {},
     {"exclude_own_cooccurrence": True}),
    ("paper, batches not bucketed by length", "paper", {}, {"bucket_batches": False}),
]  # fmt: skip


def run_row(prepared: Prepared, model: TaNPConfig, train: TrainConfig) -> dict[str, Any]:
    started = time.perf_counter()
    result = train_model(prepared, model_config=model, train=train)
    threshold = prepared.interactions.positive_threshold
    test = evaluate_model(result.model, prepared.episodes["test"], threshold=threshold)
    best = result.history[result.best_epoch - 1].valid_ndcg5
    return {"test": test, "valid": best, "seconds": time.perf_counter() - started}


def cells(blocks: dict[str, dict[str, float]]) -> list[str]:
    return [f"{blocks[block][key]:.3f}" for block, key in KEYS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--seeds", type=int, nargs="*", default=[1, 2, 3, 4, 5])
    parser.add_argument("--skip-ablation", action="store_true")
    parser.add_argument("--start", type=int, default=0, help="first ablation row to run")
    parser.add_argument(
        "--train-seeds",
        type=int,
        nargs="*",
        default=[],
        help="also train the paper preset on --split tanp with these training seeds",
    )
    args = parser.parse_args()
    interactions = load_interactions(args.data)
    print(
        f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    )
    header = (
        "| | valid NDCG@5 | test P@5 | test NDCG@5 | test MAP@5 | catalog Recall@20 | train s |"
    )
    if not args.skip_ablation:
        prepared = prepare(interactions, split="tanp", seed=2020, directory=args.data)
        print("\n### Ablation, `--split tanp` (66 test users)\n")
        print(header)
        print("|---|---|---|---|---|---|---|")
        for label, preset, model_changes, train_changes in ABLATION[args.start :]:
            row = run_row(prepared, *configs(preset, model_changes, train_changes))
            print(f"| {label} | {row['valid']:.3f} | " + " | ".join(cells(row["test"]))
                  + f" | {row['seconds']:.0f} |", flush=True)  # fmt: skip
        for name, result in evaluate_baselines(prepared, prepared.episodes["test"]).items():
            print(f"| {name} | | " + " | ".join(cells(result["test"])) + " | |")
    if args.train_seeds:
        prepared = prepare(interactions, split="tanp", seed=2020, directory=args.data)
        values = []
        for train_seed in args.train_seeds:
            row = run_row(prepared, *configs("paper", None, {"seed": train_seed}))
            values.append([float(value) for value in cells(row["test"])])
            print(
                f"training seed {train_seed}: valid {row['valid']:.3f}, test "
                + " ".join(cells(row["test"])),
                flush=True,
            )
        matrix = np.asarray(values)
        summary = [f"{m:.3f} ± {s:.3f}" for m, s in zip(matrix.mean(0), matrix.std(0), strict=True)]
        print(f"\n`--split tanp`, paper preset, training seeds {args.train_seeds} (mean ± std):")
        print("| P@5 | NDCG@5 | MAP@5 | catalog Recall@20 |\n|---|---|---|---|")
        print("| " + " | ".join(summary) + " |")
    if args.seeds:
        print(f"\n### `--split random`, seeds {', '.join(map(str, args.seeds))} (mean ± std)\n")
        rows: dict[str, list[list[float]]] = {
            "tanp (paper preset)": [],
            "popularity": [],
            "item_knn": [],
        }
        for seed in args.seeds:
            prepared = prepare(interactions, split="random", seed=seed, directory=None)
            row = run_row(prepared, *configs("paper"))
            rows["tanp (paper preset)"].append([float(value) for value in cells(row["test"])])
            for name, result in evaluate_baselines(prepared, prepared.episodes["test"]).items():
                rows[name].append([float(value) for value in cells(result["test"])])
            print(f"seed {seed}: tanp NDCG@5 {rows['tanp (paper preset)'][-1][1]:.3f}, "
                  f"item_knn {rows['item_knn'][-1][1]:.3f}", flush=True)  # fmt: skip
        print("\n| model | P@5 | NDCG@5 | MAP@5 | catalog Recall@20 |")
        print("|---|---|---|---|---|")
        for name, values in rows.items():
            matrix = np.asarray(values)
            columns = [
                f"{m:.3f} ± {s:.3f}" for m, s in zip(matrix.mean(0), matrix.std(0), strict=True)
            ]
            print(f"| {name} | " + " | ".join(columns) + " |")


if __name__ == "__main__":
    main()
