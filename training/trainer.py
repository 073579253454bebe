"""The training loop: batched episodes through one forward, Adam, selection on validation users.

Each training user's episodes see the item tables of the other folds (no self-leak); validation
and the saved model use those of all train users. Under torchrun every process trains its shard
of every batch and only rank 0 writes. The protocol in full: docs/training.md.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import distributed as dist
from torch.nn.parallel import DistributedDataParallel

from tanp.config import TaNPConfig
from tanp.model import TaNP
from tanp.scoring import Scorer
from tanp.shortlist import Episode, fit_shortlist
from training.batches import Profiles, StepBatch, draw_step, epoch_batches, training_profiles
from training.compare import selection_score
from training.config import TrainConfig
from training.episodes import Prepared
from training.item_stats import ItemTables, TableSpec, TableTensors, fold_tables, item_tables
from training.losses import tanp_loss
from training.validation import validation_headline

FOLD_SEED_OFFSET = 7  # the folds draw from their own stream, apart from the episodes'
# catalogs above this many items get a shortlist head (tanp.shortlist) when the preset asks
SHORTLIST_MIN_ITEMS = 8192


@dataclass
class EpochRecord:
    epoch: int
    loss: float
    pointwise: float
    listwise: float
    kl: float
    clustering: float
    valid_ndcg5: float
    valid_recall20: float
    valid_task_gain: float  # valid NDCG@5 minus the mean_task ablation's (NaN: not measured)
    eligible: bool  # whether selection may pick this epoch (TrainConfig.min_task_gain)
    train_seconds: float
    eval_seconds: float

    @property
    def valid_selection(self) -> float:
        return self.valid_ndcg5 + self.valid_recall20


@dataclass(frozen=True)
class TrainingData:
    """What the trainer built before its first step, for the features-only baseline to reuse:
    the training profiles and the item tables of each fold and of all train users."""

    profiles: Profiles
    fold_tensors: list[TableTensors]
    full_tensors: TableTensors


@dataclass
class TrainResult:
    model: TaNP
    best_epoch: int
    epochs_run: int
    history: list[EpochRecord]
    train_seconds: float
    data: TrainingData
    train: TrainConfig

    def on_cpu(self) -> TrainResult:
        """The same result with the model and every item table on the CPU (for evaluation)."""
        data = TrainingData(
            self.data.profiles,
            [tensors.to("cpu") for tensors in self.data.fold_tensors],
            self.data.full_tensors.to("cpu"),
        )
        self.model.to("cpu")
        data.full_tensors.install(self.model)
        return replace(self, data=data)


@dataclass(frozen=True)
class Shard:
    """This process's part of every batch under torchrun (rank of world); (0, 1) alone."""

    rank: int = 0
    world: int = 1

    @classmethod
    def current(cls) -> Shard:
        if dist.is_available() and dist.is_initialized():
            return cls(dist.get_rank(), dist.get_world_size())
        return cls()

    def rows(self, size: int) -> slice:
        """A contiguous, near-equal share of a batch of `size` episodes."""
        bounds = np.linspace(0, size, self.world + 1).round().astype(int)
        return slice(int(bounds[self.rank]), int(bounds[self.rank + 1]))

    def wrap(self, model: TaNP, device: torch.device | str) -> torch.nn.Module:
        """The network a step runs: the model alone, DistributedDataParallel under torchrun."""
        if self.world == 1:
            return model
        device = torch.device(device)
        # every process holds the same item tables and swaps them alike: no buffer broadcast
        return DistributedDataParallel(
            model,
            broadcast_buffers=False,
            device_ids=[device.index] if device.type == "cuda" else None,
        )


def table_spec(model_config: TaNPConfig, train: TrainConfig) -> TableSpec:
    return TableSpec(
        factor_dim=train.factor_dim,
        content_dim=train.content_dim,
        neighbours=model_config.neighbours,
        shrink=train.shrink,
    )


def build_untrained(
    prepared: Prepared, model_config: TaNPConfig, train: TrainConfig
) -> tuple[TaNP, ItemTables]:
    """A fresh model whose item side comes from all train users; also returns those tables."""
    interactions = prepared.interactions
    config = replace(
        model_config,
        num_items=len(interactions.item_ids),
        num_users=len(interactions.user_ids),
        item_feature_dim=train.item_feature_dim,
        neighbours=min(model_config.neighbours, len(interactions.item_ids)),
        shortlist=model_config.shortlist and len(interactions.item_ids) > SHORTLIST_MIN_ITEMS,
        label_min=interactions.label_min,
        label_max=interactions.label_max,
    )
    torch.manual_seed(train.seed)
    model = TaNP(config)
    tables = item_tables(prepared, prepared.users_of("train"), spec=table_spec(config, train))
    TableTensors.of(tables).install(model)
    return model, tables


def training_data(
    prepared: Prepared,
    model: TaNP,
    *,
    full: ItemTables,
    train: TrainConfig,
    device: torch.device | str,
) -> TrainingData:
    """Each fold's tables and all train users' as tensors on `device` (the latter installed in
    the model), and the training profiles."""
    fold_of_user, tables = fold_tables(
        prepared,
        spec=table_spec(model.config, train),
        full=full,
        folds=train.folds,
        seed=train.seed + FOLD_SEED_OFFSET,
    )
    fold_tensors = [TableTensors.of(table, device) for table in tables]
    full_tensors = TableTensors.of(full, device)
    full_tensors.install(model)
    profiles = training_profiles(
        prepared, train=train, fold_of_user=fold_of_user, seen=[table.seen for table in tables]
    )
    return TrainingData(profiles, fold_tensors, full_tensors)


def train_step(
    network: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    config: TaNPConfig,
    batch: StepBatch,
    train: TrainConfig,
    scale: float = 1.0,
) -> np.ndarray:
    """One optimiser step over `batch` (the whole batch, or this process's shard of it, with
    `scale` = world * shard / batch so the averaged gradients are those of the whole batch);
    returns (loss, pointwise, listwise, kl, clustering) of the batch seen here."""
    output = network(
        context_items=batch.support_items,
        context_labels=batch.support_labels,
        context_mask=batch.support_mask,
        target_items=batch.target_items,
        target_labels=batch.target_labels,
        target_mask=batch.target_mask,
        users=batch.users,
        sample=True,
        noise=batch.noise,
        affinity_keep=batch.affinity_keep,
    )
    targets = batch.target_labels
    if train.pointwise_loss == "bce":  # labels scaled to [0, 1]
        span = max(config.label_max - config.label_min, 1e-8)
        targets = ((targets - config.label_min) / span).clamp(0, 1)
    parts = tanp_loss(
        output,
        target_labels=targets,
        target_mask=batch.target_mask,
        positive=batch.positive,
        candidates=batch.candidates,
        correction=batch.correction,
        pointwise=train.pointwise_loss,
        pointwise_weight=train.pointwise_weight,
        listwise_weight=train.listwise_weight,
        kl_weight=train.kl_weight,
        clustering_weight=train.lambda_clustering,
        clustering_target=train.clustering_target,
    )
    optimizer.zero_grad(set_to_none=True)
    (parts.total * scale).backward()
    optimizer.step()
    return np.array([float(value.detach()) for value in parts])


def train_epoch(
    network: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    *,
    model: TaNP,
    data: TrainingData,
    train: TrainConfig,
    threshold: float,
    generator: torch.Generator,
    shard: Shard,
    device: torch.device | str,
) -> np.ndarray:
    """One pass over every training profile in shuffled batches, each on its fold's tables
    (all train users' again at the end); returns the mean loss parts per batch."""
    model.train()
    config = model.config
    unknown_user = config.unknown_user if config.user_input == "unknown" else None
    sums = np.zeros(5)
    batches = epoch_batches(data.profiles, batch_size=train.batch_size, generator=generator)
    for chosen in batches:
        if len(chosen) < max(2, shard.world):
            # every process needs an episode, and one episode is no batch for the DEC
            # target: the rule is the same alone and under torchrun, so both train alike
            continue
        data.fold_tensors[int(data.profiles.folds[chosen[0]])].install(model)
        batch = draw_step(
            data.profiles,
            chosen,
            train=train,
            num_items=config.num_items,
            threshold=threshold,
            generator=generator,
            z_dim=config.z_dim,
            affinity_dropout=config.affinity_dropout,
            unknown_user=unknown_user,
        )
        rows = shard.rows(len(chosen))
        sums += train_step(
            network,
            optimizer,
            config=config,
            batch=batch.rows(rows).to(torch.device(device)),
            train=train,
            scale=shard.world * (rows.stop - rows.start) / len(chosen),
        )
    data.full_tensors.install(model)
    return sums / max(len(batches), 1)


@dataclass
class Best:
    """The best validation selection score so far, its epoch and a copy of its weights."""

    score: float
    epoch: int
    state: dict[str, Any]

    def update(self, score: float, *, epoch: int, model: TaNP) -> None:
        if score > self.score:
            self.score, self.epoch, self.state = score, epoch, copy.deepcopy(model.state_dict())


def train_model(
    prepared: Prepared,
    *,
    model_config: TaNPConfig,
    train: TrainConfig,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    device: torch.device | str = "cpu",
) -> TrainResult:
    """Train, selecting the epoch with the best validation NDCG@5 + Recall@20 among those whose
    task path matters (`min_task_gain`; the best of all when none does); test users are never
    read. The model trains on `device`; episodes are drawn on the CPU."""
    started = time.perf_counter()
    model, full = build_untrained(prepared, model_config, train)
    model.to(device)
    data = training_data(prepared, model, full=full, train=train, device=device)
    generator = torch.Generator().manual_seed(train.seed)
    threshold = prepared.interactions.positive_threshold
    optimizer = torch.optim.Adam(
        model.parameters(), lr=train.lr, weight_decay=train.weight_decay, fused=True
    )
    shard = Shard.current()
    network = shard.wrap(model, device)
    best = Best(-np.inf, 0, copy.deepcopy(model.state_dict()))  # the best eligible epoch
    fallback = Best(-np.inf, 0, best.state)  # the best of every epoch
    history: list[EpochRecord] = []
    for epoch in range(1, train.epochs + 1):
        epoch_started = time.perf_counter()
        losses = train_epoch(
            network,
            optimizer,
            model=model,
            data=data,
            train=train,
            threshold=threshold,
            generator=generator,
            shard=shard,
            device=device,
        )
        eval_started = time.perf_counter()
        valid = validation_headline(
            model, prepared.episodes["valid"], threshold=threshold, samples=train.eval_samples
        )
        task_gain = float("nan")
        if train.min_task_gain > 0:
            ablated = validation_headline(
                model, prepared.episodes["valid"], threshold=threshold, edit="mean_task"
            )
            task_gain = float(np.nanmean(valid["NDCG@5"]) - np.nanmean(ablated["NDCG@5"]))
        eligible = not train.min_task_gain > 0 or task_gain >= train.min_task_gain
        loss, pointwise, listwise, kl, clustering = losses.tolist()
        history.append(
            EpochRecord(
                epoch=epoch,
                loss=loss,
                pointwise=pointwise,
                listwise=listwise,
                kl=kl,
                clustering=clustering,
                valid_ndcg5=float(np.nanmean(valid["NDCG@5"])),
                valid_recall20=float(np.nanmean(valid["Recall@20"])),
                valid_task_gain=task_gain,
                eligible=eligible,
                train_seconds=eval_started - epoch_started,
                eval_seconds=time.perf_counter() - eval_started,
            )
        )
        if on_epoch is not None:
            on_epoch(history[-1])
        score = selection_score(valid)
        fallback.update(score, epoch=epoch, model=model)
        if eligible:
            best.update(score, epoch=epoch, model=model)
        last = best.epoch or fallback.epoch
        if train.patience and epoch - last >= train.patience:
            break
    if best.epoch == 0:  # no epoch's task path cleared min_task_gain: the best of all, flagged
        best = fallback
    model.load_state_dict(best.state)
    model.eval()
    if model.shortlist is not None and shard.rank == 0:
        fit_shortlist_head(model, data=data, train=train, generator=generator, threshold=threshold)
    seconds = time.perf_counter() - started
    return TrainResult(model, best.epoch, len(history), history, seconds, data, train)


def fit_shortlist_head(
    model: TaNP,
    *,
    data: TrainingData,
    train: TrainConfig,
    generator: torch.Generator,
    threshold: float,
) -> float:
    """Distil the trained decoder into the shortlist head (tanp.shortlist): one support set
    drawn per training profile, each fold's under its own item tables (as in training), the
    teacher's scores over the whole catalog. Returns the distillation loss."""
    config = model.config
    device = next(model.parameters()).device

    def episodes() -> Iterator[Episode]:
        for fold, tensors in enumerate(data.fold_tensors):
            members = torch.nonzero(data.profiles.folds == fold).flatten()
            tensors.install(model)
            scorer = Scorer(model)
            for start in range(0, len(members), train.batch_size):
                batch = draw_step(
                    data.profiles,
                    members[start : start + train.batch_size],
                    train=train,
                    num_items=config.num_items,
                    threshold=threshold,
                    generator=generator,
                    z_dim=config.z_dim,
                    affinity_dropout=0.0,
                    unknown_user=None,
                )
                yield (
                    batch.support_items.to(device),
                    batch.support_labels.to(device),
                    batch.support_mask.to(device),
                    scorer.scores,
                )

    loss = fit_shortlist(model, episodes(), generator=generator)
    data.full_tensors.install(model)
    return loss
