"""Onboarding simulation (issue 22 item 4): which questions teach the model most in few rounds.

    .venv/bin/python bench/onboarding.py --runs RUN_DIR [RUN_DIR ...] [--data DIR] [--tune]
        [--weights score=1,entropy=3,...] [--rounds 4] [--json out.json]

Each test user of each run's split starts with nothing rated. Every round a strategy asks 5
artists; the user answers liked / not liked (their own label) for artists in their episode
(support and query) and "don't know" otherwise. After 1, 2 and 4 rounds: NDCG@5 over the user's
episode items not yet answered (within that list) and catalog Recall@20 over every item but the
answered ones (relevant: the remaining positives); with nothing answered yet the model is not
asked and the service's popularity ranking scores. Strategies: random, popular (train positive
counts), logpop_entropy (Rashid et al. 2002: log popularity x entropy of the item's labels among
train users) and ours (`tanp.onboarding.next_questions`, the service's). The paired bootstrap
interval of ours minus logpop_entropy is per user, pooled over the runs given. `--tune` chooses
ours' weights on validation users only (coordinate search, NDCG@5 + Recall@20 after 2 rounds)
and then scores the test users with the chosen weights alone.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tanp.checkpoint import build_model
from tanp.model import TaNP
from tanp.onboarding import DEFAULT_WEIGHTS, QuestionWeights, binary_entropy, next_questions
from tanp.scoring import Scorer, rank
from training.compare import paired_difference
from training.data import load_interactions
from training.episodes import EpisodeSet, Prepared, prepare
from training.metrics import ndcg_binary

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "lastfm"
PER_ROUND = 5
REPORTED_ROUNDS = (1, 2, 4)
STRATEGIES = ("random", "popular", "logpop_entropy", "ours")
BASELINE = "logpop_entropy"
METRICS = ("NDCG@5", "Recall@20")
TUNE_ROUNDS = 2
TUNE_GRID: dict[str, tuple[float, ...]] = {
    "score": (0.0, 1.0, 3.0),
    "entropy": (0.0, 1.0, 3.0, 6.0),
    "shrinkage": (0.0, 1.0, 3.0),
    "change": (0.0, 1.0, 3.0),
    "redundancy": (0.0, 2.0, 8.0, 16.0),
}
Asker = Callable[[list[int], list[float], set[int]], list[int]]


@dataclass
class Run:
    """One trained run and the episodes of its split."""

    name: str
    split: str
    model: TaNP
    scorer: Scorer
    prepared: Prepared
    logpop_entropy: np.ndarray  # (N,) Rashid's static question order's values

    @property
    def threshold(self) -> float:
        return self.prepared.interactions.positive_threshold


def load_run(run_dir: Path, data_dir: Path) -> Run:
    """The run's model and its split's episodes, prepared again from the data directory."""
    manifest = json.loads((run_dir / "manifest.json").read_text())
    data = manifest["data"]
    split = data["split"]
    interactions = load_interactions(
        data_dir, "hetrec-median" if split == "hetrec-median" else "auto"
    )
    prepared = prepare(interactions, split=split, seed=data["seed"], directory=data_dir)
    loaded = build_model(run_dir, "cpu")
    if loaded.items != interactions.item_ids:
        raise SystemExit(f"{run_dir}: the run's item ids differ from the data's")
    return Run(
        name=run_dir.name,
        split=split if data["seed"] is None or split == "tanp" else f"{split}:{data['seed']}",
        model=loaded.model,
        scorer=loaded.scorer,
        prepared=prepared,
        logpop_entropy=logpop_entropy_values(prepared),
    )


def logpop_entropy_values(prepared: Prepared) -> np.ndarray:
    """Rashid et al. (2002): log(ratings of the item) x entropy of its liked / not-liked labels,
    both among train users."""
    interactions = prepared.interactions
    rows = prepared.train_rows()
    items = interactions.items[rows]
    liked = interactions.labels[rows] >= interactions.positive_threshold
    count = np.bincount(items, minlength=len(interactions.item_ids)).astype(np.float64)
    positives = np.bincount(items, weights=liked, minlength=len(interactions.item_ids))
    share = np.divide(positives, count, out=np.zeros_like(count), where=count > 0)
    return np.log1p(count) * binary_entropy(share)


def static_asker(order_values: np.ndarray) -> Asker:
    """Ask the highest-valued items not yet asked (a fixed order, whatever the answers)."""
    order = rank(order_values)

    def ask(items: list[int], labels: list[float], asked: set[int]) -> list[int]:
        picked: list[int] = []
        for item in order.tolist():
            if item not in asked:
                picked.append(item)
                if len(picked) == PER_ROUND:
                    break
        return picked

    return ask


def askers(run: Run, *, user: int, weights: QuestionWeights) -> dict[str, Asker]:
    rng = np.random.default_rng(user)
    num_items = run.model.config.num_items

    def random_ask(items: list[int], labels: list[float], asked: set[int]) -> list[int]:
        unseen = np.setdiff1d(np.arange(num_items), np.fromiter(asked, dtype=np.int64))
        return [int(item) for item in rng.choice(unseen, size=PER_ROUND, replace=False)]

    def ours(items: list[int], labels: list[float], asked: set[int]) -> list[int]:
        return next_questions(
            run.scorer,
            support_items=items,
            support_labels=labels,
            k=PER_ROUND,
            exclude=sorted(asked),
            weights=weights,
        )

    popularity = run.model.item_popularity.detach().to(torch.float64).numpy()
    return {
        "random": random_ask,
        "popular": static_asker(popularity),
        "logpop_entropy": static_asker(run.logpop_entropy),
        "ours": ours,
    }


def evaluate(
    run: Run, *, items: list[int], labels: list[float], history: dict[int, float]
) -> dict[str, float]:
    """NDCG@5 over the unanswered history items and catalog Recall@20 (NaN when undefined)."""
    if items:
        state = run.scorer.encode_one(items, labels)
        scores = run.scorer.scores(state)[0].to(torch.float64).numpy()
    else:  # the service's answer to an empty support set
        scores = run.model.item_popularity.detach().to(torch.float64).numpy()
    answered = set(items)
    remaining = np.array([item for item in history if item not in answered], dtype=np.int64)
    relevant = np.array([history[item] >= run.threshold for item in remaining.tolist()])
    result = {metric: float("nan") for metric in METRICS}
    positives = int(relevant.sum()) if relevant.size else 0
    if positives:
        order = rank(scores[remaining])
        result["NDCG@5"] = ndcg_binary(relevant[order], total_relevant=positives, k=5)
        top = rank(scores, k=20, exclude=np.asarray(items, dtype=np.int64))
        result["Recall@20"] = float(np.isin(top, remaining[relevant]).sum()) / positives
    return result


def simulate(
    run: Run,
    episodes: EpisodeSet,
    *,
    strategies: tuple[str, ...],
    weights: QuestionWeights,
    rounds: int,
) -> dict[str, dict[int, dict[str, np.ndarray]]]:
    """strategy -> rounds -> metric -> per-user values (episode order)."""
    reported = [r for r in REPORTED_ROUNDS if r <= rounds]
    values = {
        name: {r: {metric: np.full(len(episodes), np.nan) for metric in METRICS} for r in reported}
        for name in strategies
    }
    for episode in range(len(episodes)):
        support_items, support_labels = episodes.support(episode)
        query_items, query_labels = episodes.query(episode)
        history = dict(
            zip(
                np.concatenate([support_items, query_items]).tolist(),
                np.concatenate([support_labels, query_labels]).astype(float).tolist(),
                strict=True,
            )
        )
        ask_with = askers(run, user=int(episodes.users[episode]), weights=weights)
        for name in strategies:
            items: list[int] = []
            labels: list[float] = []
            asked: set[int] = set()
            for round_number in range(1, rounds + 1):
                for item in ask_with[name](items, labels, asked):
                    asked.add(item)
                    if item in history:
                        items.append(item)
                        labels.append(history[item])
                if round_number in values[name]:
                    scored = evaluate(run, items=items, labels=labels, history=history)
                    for metric in METRICS:
                        values[name][round_number][metric][episode] = scored[metric]
    return values


def objective(runs: list[Run], weights: QuestionWeights, *, users: int) -> float:
    """Validation users of every run (the first `users` episodes of each): NDCG@5 + Recall@20
    of ours after TUNE_ROUNDS rounds, averaged over the runs."""
    total = []
    for run in runs:
        values = simulate(
            run,
            first_episodes(run.prepared.episodes["valid"], users),
            strategies=("ours",),
            weights=weights,
            rounds=TUNE_ROUNDS,
        )["ours"][TUNE_ROUNDS]
        total.append(sum(float(np.nanmean(values[metric])) for metric in METRICS))
    return float(np.mean(total))


def first_episodes(episodes: EpisodeSet, count: int) -> EpisodeSet:
    return EpisodeSet(
        **{f.name: getattr(episodes, f.name)[:count] for f in dataclasses.fields(episodes)}
    )


def tune(
    runs: list[Run], start: QuestionWeights, *, users: int
) -> tuple[QuestionWeights, list[dict[str, Any]]]:
    """Coordinate search over TUNE_GRID from `start`, two passes, on validation users only."""
    best, best_value = start, objective(runs, start, users=users)
    trials = [{"weights": dataclasses.asdict(best), "valid": best_value}]
    for _ in range(2):
        improved = False
        for field, grid in TUNE_GRID.items():
            for value in grid:
                if value == getattr(best, field):
                    continue
                trial = dataclasses.replace(best, **{field: value})
                score = objective(runs, trial, users=users)
                trials.append({"weights": dataclasses.asdict(trial), "valid": score})
                print(f"  valid {score:.4f}  {dataclasses.asdict(trial)}", flush=True)
                if score > best_value:
                    best, best_value, improved = trial, score, True
        if not improved:
            break
    return best, trials


def parse_weights(text: str | None) -> QuestionWeights:
    if not text:
        return DEFAULT_WEIGHTS
    values = {key: float(value) for key, value in (part.split("=") for part in text.split(","))}
    return dataclasses.replace(DEFAULT_WEIGHTS, **values)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=Path, nargs="+", required=True)
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--rounds", type=int, default=max(REPORTED_ROUNDS))
    parser.add_argument("--tune", action="store_true")
    parser.add_argument("--tune-users", type=int, default=150, help="validation users per run")
    parser.add_argument("--tune-only", action="store_true", help="stop after --tune")
    parser.add_argument("--weights", help="ours' weights, e.g. score=1,entropy=3,redundancy=8")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    torch.set_num_threads(1)
    started, load_before = time.perf_counter(), os.getloadavg()
    runs = [load_run(run_dir, args.data) for run_dir in args.runs]
    weights = parse_weights(args.weights)
    trials: list[dict[str, Any]] = []
    if args.tune:
        weights, trials = tune(runs, weights, users=args.tune_users)
    print(f"weights: {dataclasses.asdict(weights)}", flush=True)
    if args.tune_only:
        if args.json:
            args.json.write_text(
                json.dumps({"weights": dataclasses.asdict(weights), "tuning": trials}, indent=2)
            )
        return
    per_run = {
        run.name: simulate(
            run,
            run.prepared.episodes["test"],
            strategies=STRATEGIES,
            weights=weights,
            rounds=args.rounds,
        )
        for run in runs
    }
    reported = [r for r in REPORTED_ROUNDS if r <= args.rounds]
    table: dict[str, Any] = {}
    for name in STRATEGIES:
        for r in reported:
            for metric in METRICS:
                pooled = np.concatenate([per_run[run.name][name][r][metric] for run in runs])
                table.setdefault(name, {}).setdefault(str(r), {})[metric] = float(
                    np.nanmean(pooled)
                )
    by_split = {
        run.split: {
            name: {
                str(r): {
                    metric: float(np.nanmean(per_run[run.name][name][r][metric]))
                    for metric in METRICS
                }
                for r in reported
            }
            for name in STRATEGIES
        }
        for run in runs
    }
    differences: dict[str, Any] = {}
    for r in reported:
        for metric in METRICS:
            difference = paired_difference(
                [per_run[run.name]["ours"][r][metric] for run in runs],
                [per_run[run.name][BASELINE][r][metric] for run in runs],
            )
            differences.setdefault(str(r), {})[metric] = dataclasses.asdict(difference)
    print_table(table, differences, reported, runs)
    for split, values in by_split.items():
        print(
            f"\n{split}, after 2 rounds: "
            + "; ".join(
                f"{name} {values[name]['2']['NDCG@5']:.3f} / {values[name]['2']['Recall@20']:.3f}"
                for name in STRATEGIES
                if "2" in values[name]
            )
        )
    result = {
        "runs": {run.name: run.split for run in runs},
        "users": {run.name: len(run.prepared.episodes["test"]) for run in runs},
        "weights": dataclasses.asdict(weights),
        "tuning": trials,
        "table": table,
        "by_split": by_split,
        "ours_minus_logpop_entropy": differences,
        "seconds": time.perf_counter() - started,
        "machine": {
            "platform": platform.platform(),
            "cpus": os.cpu_count(),
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
            "torch": torch.__version__,
        },
    }
    if args.json:
        args.json.write_text(json.dumps(result, indent=2))
    print(f"{result['seconds']:.0f} s; load average {load_before} -> {os.getloadavg()}")


def print_table(
    table: dict[str, Any], differences: dict[str, Any], reported: list[int], runs: list[Run]
) -> None:
    splits = ", ".join(run.split for run in runs)
    users = sum(len(run.prepared.episodes["test"]) for run in runs)
    print(f"\ntest users of {splits} ({users} users); NDCG@5 / Recall@20 after each round\n")
    print("| strategy | " + " | ".join(f"{r} round{'s' * (r > 1)}" for r in reported) + " |")
    print("|---|" + "---|" * len(reported))
    for name in STRATEGIES:
        cells = [
            f"{table[name][str(r)]['NDCG@5']:.3f} / {table[name][str(r)]['Recall@20']:.3f}"
            for r in reported
        ]
        print(f"| {name} | " + " | ".join(cells) + " |")
    cells = []
    for r in reported:
        parts = []
        for metric in METRICS:
            d = differences[str(r)][metric]
            parts.append(f"{d['mean']:+.3f} [{d['low']:+.3f}, {d['high']:+.3f}]")
        cells.append(" / ".join(parts))
    print(f"| ours - {BASELINE} (95 % CI) | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
