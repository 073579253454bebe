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

from tanp.model import TaNPConfig
from training.data import load_interactions
from training.episodes import prepare
from training.losses import tanp_loss
from training.trainer import (
    Batch,
    TrainConfig,
    build_untrained,
    context_target_masks,
    episode_tensors,
    epoch_batches,
    train_step,
)

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data" / "lastfm"


def per_task_epoch(
    model, optimizer, data: Batch, train: TrainConfig, generator: torch.Generator
) -> None:  # type: ignore[no-untyped-def]
    order = torch.randperm(len(data.items), generator=generator)
    for start in range(0, len(order) - train.batch_size + 1, train.batch_size):
        losses, assignments = [], []
        for episode in order[start : start + train.batch_size].tolist():
            length = int(data.lengths[episode])
            items = data.items[episode : episode + 1, :length]
            labels = data.labels[episode : episode + 1, :length]
            context, target = context_target_masks(
                data.lengths[episode : episode + 1],
                context_min=train.context_min,
                width=length,
                generator=generator,
            )
            output = model(
                context_items=items, context_labels=labels, context_mask=context,
                target_items=items, target_labels=labels, target_mask=target, sample=True,
            )  # fmt: skip
            parts = tanp_loss(
                output, target_labels=labels, target_mask=target, clustering_weight=0.0
            )
            losses.append(parts.total)
            assignments.append(output.assignment)
        optimizer.zero_grad()
        torch.stack(losses).mean().backward()
        optimizer.step()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--epochs", type=int, default=5)
    args = parser.parse_args()
    interactions = load_interactions(args.data)
    prepared = prepare(interactions, split="tanp", seed=2020, directory=args.data)
    train = TrainConfig(lr=1e-4)
    data = episode_tensors(prepared.episodes["train"])
    timings: dict[str, list[float]] = {"batched": [], "per-task loop": []}
    for name in timings:
        model = build_untrained(prepared, TaNPConfig(num_items=1), train)
        model.train()
        optimizer = torch.optim.Adam(model.parameters(), lr=train.lr, fused=True)
        generator = torch.Generator().manual_seed(0)
        for _ in range(args.epochs + 1):  # first epoch is warm-up
            started = time.perf_counter()
            if name == "batched":
                for chosen in epoch_batches(data.lengths, train=train, generator=generator):
                    train_step(
                        model, optimizer, data=data, chosen=chosen, train=train, generator=generator
                    )
            else:
                per_task_epoch(model, optimizer, data, train, generator)
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
