"""Training-epoch time: our batched trainer vs a per-task loop (the reference's way).

Same model, same data (the authors' 248 train episodes of the `tanp` split), same optimiser;
the per-task loop runs one forward per task and one optimiser step per batch, as the
reference's `global_update`. Epochs of the two alternate in one run. Measured
for the default preset (`paper`, what `tanp-train train` trains) and the reference notebook's
dimensions; prints medians and their ratio.

    .venv/bin/python bench/train_speed.py [--data DIR] [--epochs 10] [--presets paper,reference]
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch

from tanp.model import TaNP
from training.data import load_interactions
from training.episodes import Prepared, prepare
from training.losses import clustering_loss, tanp_loss
from training.presets import DEFAULT_PRESET, preset_configs
from training.trainer import (
    Batch,
    TrainConfig,
    build_untrained,
    context_target_split,
    episode_tensors,
    epoch_batches,
    hide_users,
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
            users = hide_users(
                model, data.users[episode : episode + 1], train=train, generator=generator
            )
            output = model(
                context_items=items, context_labels=labels, context_mask=split.context,
                target_items=items, target_labels=labels, target_mask=split.target,
                users=users, sample=True,
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


def measure(prepared: Prepared, *, preset: str, epochs: int) -> tuple[float, float]:
    """Median epoch seconds of (batched, per-task loop) for one preset's model."""
    model_config, train = preset_configs(preset)
    train = replace(train, all_train_users=False)  # both trainers see the same 248 episodes
    data = episode_tensors(prepared.episodes["train"])
    names = ("batched", "per-task loop")
    timings: dict[str, list[float]] = {name: [] for name in names}
    states = {}
    for name in names:
        model = build_untrained(prepared, model_config, train).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=train.lr, fused=True)
        states[name] = (model, optimizer, torch.Generator().manual_seed(0))
    # epochs alternate between the two trainers so that machine noise hits both alike
    for _ in range(epochs + 1):  # the first round is warm-up
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
    return statistics.median(timings["batched"][1:]), statistics.median(
        timings["per-task loop"][1:]
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--data", type=Path, default=SHARED)
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--presets", default=f"{DEFAULT_PRESET},reference")
    args = parser.parse_args()
    interactions = load_interactions(args.data)
    prepared = prepare(interactions, split="tanp", seed=2020, directory=args.data)
    episodes = len(prepared.episodes["train"])
    threads = torch.get_num_threads()
    print(f"machine: {platform.machine()}, {threads} torch threads, torch {torch.__version__}")
    print(f"episodes per epoch: {episodes}, batch 32, {args.epochs} epochs each, alternating")
    print("| preset (model) | batched, ours (s/epoch) | per-task loop (s/epoch) | ratio |")
    print("|---|---|---|---|")
    for preset in args.presets.split(","):
        batched, looped = measure(prepared, preset=preset, epochs=args.epochs)
        print(f"| {preset} | {batched:.4f} | {looped:.4f} | {looped / batched:.1f}x |")


if __name__ == "__main__":
    main()
