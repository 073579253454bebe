"""Training at scale (issue 13): seconds per epoch, peak RSS and quality on seeded synthetic data
with a planted taste structure, from 100k to 3M interactions and 4k to 100k items.

    .venv/bin/python bench/scale.py [--sizes 100k:4k 300k:4k 1m:20k 3m:100k] [--epochs 3]
        [--full 1m:20k] [--explicit 360k:3.5k:6k] [--json out.json]

Generator: items have Zipf-like popularity; every item and every user belongs to one of G taste
groups; a user draws most of their items from their group (by popularity within it), the rest
from the whole catalog. Implicit data: the drawn items are positives, as many uniform random
items negatives (the Last.fm protocol); explicit data: 1-5 ratings, high inside the user's
group, low outside. Each size is trained for a few epochs with the default preset: the median
epoch time is reported and the log-log slope of epoch time against interactions is fitted.
`--full` trains one size to its best epoch and scores the test users against popularity and
item-kNN on the same episodes.
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from training.baselines import Baselines, TuningPair
from training.compare import per_user_headline
from training.config import preset_configs
from training.data import Interactions
from training.episodes import Prepared, random_split
from training.evaluate import tanp_scores
from training.trainer import train_model

GROUPS = 20
IN_GROUP = 0.8


def parse_count(text: str) -> int:
    text = text.lower()
    scale = {"k": 1_000, "m": 1_000_000}.get(text[-1], 1)
    return int(float(text.rstrip("km")) * scale)


def synthetic(
    *, interactions: int, items: int, users: int | None = None, explicit: bool, seed: int = 0
) -> Interactions:
    """A seeded dataset with a planted taste structure (see the module docstring)."""
    rng = np.random.default_rng(seed)
    mean_profile = 60
    users = users or max(200, interactions // (mean_profile * (1 if explicit else 2)))
    popularity = 1.0 / np.arange(1, items + 1) ** 0.8
    rng.shuffle(popularity)
    item_group = rng.integers(0, GROUPS, items)
    group_items = [np.flatnonzero(item_group == group) for group in range(GROUPS)]
    group_weights = [popularity[members] / popularity[members].sum() for members in group_items]
    everything = popularity / popularity.sum()
    per_user = interactions / users / (1 if explicit else 2)
    lengths = np.clip(rng.lognormal(np.log(per_user) - 0.3, 0.8, users).astype(int), 8, 2000)
    lengths = (lengths * (interactions / (lengths.sum() * (1 if explicit else 2)))).astype(int)
    lengths = np.clip(lengths, 8, items // 2)
    rows_users, rows_items, rows_labels = [], [], []
    for user in range(users):
        group = user % GROUPS
        count = int(lengths[user])
        inside = rng.binomial(count, IN_GROUP)
        own = rng.choice(
            group_items[group],
            size=min(inside, group_items[group].size),
            replace=False,
            p=group_weights[group],
        )
        other = rng.choice(items, size=count - own.size, replace=False, p=everything)
        chosen = np.unique(np.concatenate([own, other]))
        if explicit:
            liked = item_group[chosen] == group
            labels = np.where(
                liked, rng.integers(4, 6, chosen.size), rng.integers(1, 4, chosen.size)
            )
            flip = rng.random(chosen.size) < 0.1  # noise
            labels[flip] = rng.integers(1, 6, int(flip.sum()))
        else:
            negatives = (
                rng.choice(np.setdiff1d(np.arange(items), chosen), size=chosen.size, replace=False)
                if items > 3 * chosen.size
                else rng.integers(0, items, chosen.size)
            )
            negatives = np.setdiff1d(negatives, chosen)
            labels = np.concatenate([np.ones(chosen.size), np.zeros(negatives.size)])
            chosen = np.concatenate([chosen, negatives])
        rows_users.append(np.full(chosen.size, user))
        rows_items.append(chosen)
        rows_labels.append(labels)
    return Interactions(
        user_ids=[f"u{user}" for user in range(users)],
        item_ids=[f"i{item}" for item in range(items)],
        users=np.concatenate(rows_users).astype(np.int64),
        items=np.concatenate(rows_items).astype(np.int64),
        labels=np.concatenate(rows_labels).astype(np.float32),
        item_names=None,
        source={"format": "synthetic", "seed": seed},
    )


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def score(prepared: Prepared, scores: np.ndarray) -> tuple[float, float]:
    values = per_user_headline(
        prepared.episodes["test"], scores, threshold=prepared.interactions.positive_threshold
    )
    return float(np.nanmean(values["NDCG@5"])), float(np.nanmean(values["Recall@20"]))


def run(
    spec: str, *, epochs: int | None, explicit: bool, users: int | None = None
) -> dict[str, Any]:
    parts = spec.split(":")
    interactions, items = parse_count(parts[0]), parse_count(parts[1])
    made = time.perf_counter()
    data = synthetic(interactions=interactions, items=items, users=users, explicit=explicit)
    prepared = random_split(data, seed=1, min_interactions=30)
    built = time.perf_counter() - made
    train = {"epochs": epochs, "patience": 0} if epochs else {}
    model_config, train_config = preset_configs("paper", train={**train, "content_dim": 0})
    started = time.perf_counter()
    result = train_model(prepared, model_config=model_config, train=train_config)
    seconds = time.perf_counter() - started
    row: dict[str, Any] = {
        "spec": spec,
        "interactions": int(data.users.size),
        "users": len(data.user_ids),
        "items": items,
        "explicit": explicit,
        "epoch_seconds": float(np.median([record.train_seconds for record in result.history])),
        "eval_seconds": float(np.median([record.eval_seconds for record in result.history])),
        "train_seconds": seconds,
        "best_epoch": result.best_epoch,
        "epochs_run": result.epochs_run,
        "data_seconds": built,
        "peak_rss_mb": peak_rss_mb(),
    }
    if epochs is None:
        baselines = Baselines(prepared)
        (knn,) = baselines.tune(
            "item_knn",
            [{"shrink": shrink} for shrink in (0.0, 10.0, 50.0)],
            lambda episodes, setting: baselines.item_knn(episodes, shrink=setting["shrink"]),
            [TuningPair(prepared.episodes["valid"], prepared.episodes["test"])],
        )
        row["quality"] = {
            "tanp": score(prepared, tanp_scores(result.model, prepared.episodes["test"])),
            "item_knn": score(prepared, knn.test_scores),
            "popularity": score(prepared, baselines.popularity(prepared.episodes["test"])),
        }
        best = result.history[result.best_epoch - 1]
        row["seconds_to_best_epoch"] = sum(
            r.train_seconds + r.eval_seconds for r in result.history[: best.epoch]
        )
    return row


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sizes", nargs="*", default=["100k:4k", "300k:4k", "1m:20k", "3m:100k"])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument(
        "--full", nargs="*", default=[], help="train to the best epoch, with quality"
    )
    parser.add_argument(
        "--explicit",
        nargs="*",
        default=[],
        help="interactions:items:users, 1-5 ratings, to the best epoch",
    )
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    print(
        f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"
    )
    rows = []
    print(
        "\n| interactions | users | items | s/epoch (train) | s/epoch (validation) | peak RSS MB |\n|---:|---:|---:|---:|---:|---:|"
    )
    for spec in args.sizes:
        row = run(spec, epochs=args.epochs, explicit=False)
        rows.append(row)
        print(
            f"| {row['interactions']:,} | {row['users']:,} | {row['items']:,} | {row['epoch_seconds']:.2f} | {row['eval_seconds']:.2f} | {row['peak_rss_mb']:.0f} |",
            flush=True,
        )
    if len(rows) >= 2:
        slope = np.polyfit(
            np.log([r["interactions"] for r in rows]), np.log([r["epoch_seconds"] for r in rows]), 1
        )[0]
        print(f"\nlog-log slope of training epoch time against interactions: {slope:.2f}")
    full = []
    for spec in args.full:
        row = run(spec, epochs=None, explicit=False)
        full.append(row)
        print(
            f"\n{spec}: best epoch {row['best_epoch']} of {row['epochs_run']}, {row['seconds_to_best_epoch']:.0f} s to it, {row['train_seconds']:.0f} s in all; NDCG@5 / Recall@20: "
            + ", ".join(f"{k} {v[0]:.3f} / {v[1]:.3f}" for k, v in row["quality"].items()),
            flush=True,
        )
    for spec in args.explicit:
        interactions, items, users = spec.split(":")
        row = run(f"{interactions}:{items}", epochs=None, explicit=True, users=parse_count(users))
        full.append(row)
        print(
            f"\nexplicit {spec}: {row['interactions']:,} ratings, best epoch {row['best_epoch']} of {row['epochs_run']}, {row['train_seconds']:.0f} s in all; NDCG@5 / Recall@20: "
            + ", ".join(f"{k} {v[0]:.3f} / {v[1]:.3f}" for k, v in row["quality"].items()),
            flush=True,
        )
    if args.json:
        args.json.write_text(
            json.dumps({"epochs": rows, "full": full}, indent=1) + "\n", encoding="utf-8"
        )


if __name__ == "__main__":
    main()
