"""Training-epoch time: our batched trainer vs a per-task loop (the reference's way).

Same model, same data (the authors' 248 train episodes when ../shared/data is present, else
synthetic), same optimiser; the per-task loop runs one forward per task and one optimiser step
per batch, as the reference's `global_update`. Prints medians and their ratio.

    .venv/bin/python bench/train_speed.py [--data DIR] [--epochs 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch

from tanp.model import TaNP, TaNPConfig
from training.data import load_interactions
from training.episodes import prepare
from training.losses import clustering_loss, tanp_loss
from training.trainer import (
    Batch,
    TrainConfig,
    build_untrained,
    context_target_split,
    episode_tensors,
    epoch_batches,
    train_step,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "lastfm"


def per_task_epoch(
    model: TaNP,
    optimizer: torch.optim.Optimizer,
    *,
    data: Batch,
    train: TrainConfig,
    generator: torch.Generator,
) -> None:
    """The reference's `global_update`: per task, sample its points and run one forward; one
    loss (mean task loss + clustering over the batch) and one optimiser step per batch."""
    order = torch.randperm(len(data.items), generator=generator)
    for start in range(0, len(order) - train.batch_size + 1, train.batch_size):
        losses, assignments = [], []
        for episode in order[start : start + train.batch_size].tolist():
            split = context_target_split(
                data.lengths[episode : episode + 1],
                context_min=train.context_min,
                width=int(data.lengths[episode]),
                generator=generator,
            )
            items = data.items[episode : episode + 1][:, split.order[0]]
            labels = data.labels[episode : episode + 1][:, split.order[0]]
            output = model(
                context_items=items, context_labels=labels, context_mask=split.context,
                target_items=items, target_labels=labels, target_mask=split.target, sample=True,
            )  # fmt: skip
            parts = tanp_loss(
                output, target_labels=labels, target_mask=split.target, clustering_weight=0.0
            )
            losses.append(parts.total)
            assignments.append(output.assignment)
        clustering = clustering_loss(torch.cat(assignments), target=train.clustering_target)
        optimizer.zero_grad()
        (torch.stack(losses).mean() + train.lambda_clustering * clustering).backward()
        optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    interactions = load_interactions(args.data)
    prepared = prepare(interactions, split="tanp", seed=2020, directory=args.data)
    train = TrainConfig(lr=1e-4)
    data = episode_tensors(prepared.episodes["train"])
    names = ("batched", "per-task loop")
    timings: dict[str, list[float]] = {name: [] for name in names}
    states = {}
    for name in names:
        model = build_untrained(prepared, TaNPConfig(num_items=1), train).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=train.lr, fused=True)
        states[name] = (model, optimizer, torch.Generator().manual_seed(0))
    # epochs alternate between the two trainers so that machine noise hits both alike
    for _ in range(args.epochs + 1):  # the first round is warm-up
        for name in names:
            model, optimizer, generator = states[name]
            started = time.perf_counter()
            if name == "batched":
                for chosen in epoch_batches(data.lengths, train=train, generator=generator):
                    train_step(
                        model, optimizer, data=data, chosen=chosen, train=train, generator=generator
                    )
            else:
                per_task_epoch(model, optimizer, data=data, train=train, generator=generator)
            timings[name].append(time.perf_counter() - started)
    batched = statistics.median(timings["batched"][1:])
    looped = statistics.median(timings["per-task loop"][1:])
    threads = torch.get_num_threads()
    print(f"machine: {platform.machine()}, {threads} torch threads, torch {torch.__version__}")
    print(f"episodes per epoch: {len(data.items)} (batch {train.batch_size}, reference model dims)")
    print("| trainer | median epoch (s) |")
    print("|---|---|")
    print(f"| batched (ours) | {batched:.4f} |")
    print(f"| per-task loop (reference's way) | {looped:.4f} |")
    print(f"ratio: {looped / batched:.1f}x")


if __name__ == "__main__":
    main()
