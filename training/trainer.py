"""Batched episodic training of TaNP: every batch of episodes goes through one forward.

Context/target split as the reference (context >= context_min, target = context plus extra
points), drawn for the whole batch at once with padding masks. Adam. Model selection and early
stopping on validation users only (NDCG@5 within query, z = posterior mean).
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from typing import Any, NamedTuple

import numpy as np
import torch

from tanp.model import TaNP, TaNPConfig
from tanp.scoring import rank
from training.baselines import cosine_similarity, positive_matrix
from training.data import positive_threshold
from training.episodes import EpisodeSet, Prepared, all_user_episodes
from training.evaluate import query_scores
from training.losses import ClusteringTarget, tanp_loss
from training.metrics import ndcg_binary

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TrainConfig:
    """How to train; stored in the manifest. Defaults are the reference notebook's."""

    epochs: int = 150
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.0
    lambda_clustering: float = 0.1
    clustering_target: ClusteringTarget = "dec"
    kl_weight: float = 1.0
    context_min: int = 20
    seed: int = 2020
    patience: int = 0  # epochs without validation improvement before stopping; 0 = never
    all_train_users: bool = False
    unknown_user_rate: float = 0.5
    eval_samples: int = 0
    item_prior: bool = False
    lr_schedule: str = "constant"  # or "cosine"
    drop_last: bool = True
    bucket_batches: bool = True
    exclude_own_cooccurrence: bool = False
    # select on every validation user (support = half, at most 20) instead of the 35 episodes
    valid_all_users: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class EpochRecord:
    epoch: int
    loss: float
    mse: float
    kl: float
    clustering: float
    valid_ndcg5: float
    train_seconds: float
    eval_seconds: float


@dataclass
class TrainResult:
    model: TaNP
    best_epoch: int
    epochs_run: int
    history: list[EpochRecord]
    train_seconds: float


@dataclass(frozen=True)
class Batch:
    """Padded support+query points of B episodes: items/labels (B, L), lengths (B,), users (B,)."""

    items: torch.Tensor
    labels: torch.Tensor
    lengths: torch.Tensor
    users: torch.Tensor


def episode_tensors(episodes: EpisodeSet) -> Batch:
    """All points of every episode (support then query), padded to the longest."""
    lengths = episodes.support_len + episodes.query_len
    width = int(lengths.max())
    items = np.zeros((len(episodes), width), dtype=np.int64)
    labels = np.zeros((len(episodes), width), dtype=np.float32)
    for episode in range(len(episodes)):
        support_items, support_labels = episodes.support(episode)
        query_items, query_labels = episodes.query(episode)
        items[episode, : lengths[episode]] = np.concatenate([support_items, query_items])
        labels[episode, : lengths[episode]] = np.concatenate([support_labels, query_labels])
    return Batch(
        torch.from_numpy(items),
        torch.from_numpy(labels),
        torch.from_numpy(lengths.astype(np.int64)),
        torch.from_numpy(episodes.users),
    )


def batch_count(episodes: int, *, train: TrainConfig) -> int:
    """Batches per epoch: a last partial batch is dropped with `drop_last` unless it is the
    only one."""
    full, rest = divmod(episodes, train.batch_size)
    return full + (1 if rest and (not train.drop_last or full == 0) else 0)


def epoch_batches(
    lengths: torch.Tensor, *, train: TrainConfig, generator: torch.Generator
) -> list[torch.Tensor]:
    """One epoch's batches of episode indices, in random order.

    With `bucket_batches`, each run of 4 batches' worth of a random permutation is sorted by
    episode length before it is cut, so a batch pads to little more than its own lengths."""
    order = torch.randperm(len(lengths), generator=generator)
    size = train.batch_size
    if train.bucket_batches:
        chunks = [order[start : start + 4 * size] for start in range(0, len(order), 4 * size)]
        order = torch.cat([chunk[lengths[chunk].argsort(stable=True)] for chunk in chunks])
    batches = [order[start : start + size] for start in range(0, len(order), size)]
    batches = batches[: batch_count(len(lengths), train=train)]
    shuffle = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[index] for index in shuffle]


class PointSplit(NamedTuple):
    """Sampled points of B episodes: order (B, W) indexes each episode's points, context and
    target (B, W) mask the first n_context and n_context + n_extra of them."""

    order: torch.Tensor
    context: torch.Tensor
    target: torch.Tensor


def context_target_split(
    lengths: torch.Tensor, *, context_min: int, width: int, generator: torch.Generator
) -> PointSplit:
    """The reference's `new_context_target_split` for a whole batch.

    n_context ~ U[min(context_min, n-1), n-1], n_extra ~ U[0, n - n_context - 1]; a random
    permutation picks the points; target = context + extra. Like the reference, only the
    sampled points are kept: W = the largest target size in the batch.
    """
    low = torch.clamp(torch.clamp(lengths - 1, min=1), max=context_min)
    high = torch.clamp(lengths - 1, min=1)  # inclusive upper bound of n_context
    uniform = torch.rand(lengths.shape, generator=generator)
    n_context = low + (uniform * (high - low + 1).float()).long().clamp(max=(high - low))
    room = torch.clamp(lengths - n_context, min=1)  # n_extra in [0, room - 1]
    n_extra = (
        (torch.rand(lengths.shape, generator=generator) * room.float()).long().clamp(max=room - 1)
    )
    keys = torch.rand((lengths.shape[0], width), generator=generator)
    positions = torch.arange(width)[None, :]
    keys = keys.masked_fill(positions >= lengths[:, None], float("inf"))
    n_target = n_context + n_extra
    keep = int(n_target.max())
    order = keys.argsort(dim=1)[:, :keep]
    kept = torch.arange(keep)[None, :]
    return PointSplit(order, kept < n_context[:, None], kept < n_target[:, None])


def item_prior_features(counts: np.ndarray, similarity: np.ndarray) -> np.ndarray:
    """(items, 2) fixed decoder inputs from train users only (positive counts, item cosine
    similarity): standardised log popularity and mean similarity to the 50 most popular."""
    popularity = np.log1p(counts)
    popularity = (popularity - popularity.mean()) / (popularity.std() + 1e-8)
    top = np.argsort(-counts, kind="stable")[:50]
    closeness = similarity[:, top].mean(axis=1)
    closeness = (closeness - closeness.mean()) / (closeness.std() + 1e-8)
    return np.stack([popularity, closeness], axis=1).astype(np.float32)


def build_untrained(prepared: Prepared, model_config: TaNPConfig, train: TrainConfig) -> TaNP:
    """A fresh model whose buffers (popularity, item priors) come from train users only."""
    interactions = prepared.interactions
    config = replace(
        model_config,
        num_items=len(interactions.item_ids),
        num_users=len(interactions.user_ids),
        item_prior_dim=2 if train.item_prior else 0,
        neighbours=min(model_config.neighbours, len(interactions.item_ids)),
        label_min=interactions.label_min,
        label_max=interactions.label_max,
    )
    torch.manual_seed(train.seed)
    model = TaNP(config)
    matrix = positive_matrix(prepared)
    counts = matrix.sum(axis=0)
    model.item_popularity.copy_(torch.from_numpy(counts))
    if not (train.item_prior or config.neighbours):
        return model
    similarity = cosine_similarity(matrix)
    if train.item_prior:
        model.item_prior.copy_(torch.from_numpy(item_prior_features(counts, similarity)))
    if config.neighbours:
        index, weight = nearest_neighbours(similarity, count=config.neighbours)
        model.neighbour_index.copy_(torch.from_numpy(index))
        model.neighbour_weight.copy_(torch.from_numpy(weight))
        model.build_pair_similarity()
    return model


def nearest_neighbours(similarity: np.ndarray, *, count: int) -> tuple[np.ndarray, np.ndarray]:
    """Each item's `count` most similar items (ties by index) from an (items, items)
    similarity matrix, as (items, count) index and weight arrays."""
    count = min(count, similarity.shape[0])
    index = np.argsort(-similarity, axis=1, kind="stable")[:, :count]
    weight = np.take_along_axis(similarity, index, axis=1)
    return index.astype(np.int64), weight.astype(np.float32)


def train_model(
    prepared: Prepared,
    *,
    model_config: TaNPConfig,
    train: TrainConfig,
    on_epoch: Callable[[EpochRecord], None] | None = None,
) -> TrainResult:
    """Train, selecting the epoch with the best validation NDCG@5; test users are never read."""
    model = build_untrained(prepared, model_config, train)
    generator = torch.Generator().manual_seed(train.seed)
    rng = np.random.default_rng(train.seed)
    episodes = (
        all_user_episodes(prepared, rng=rng)
        if train.all_train_users
        else prepared.episodes["train"]
    )
    data = episode_tensors(episodes)
    validation = (
        all_user_episodes(prepared, split_name="valid", rng=np.random.default_rng(train.seed + 1))
        if train.valid_all_users
        else prepared.episodes["valid"]
    )
    threshold = prepared.interactions.positive_threshold
    optimizer = torch.optim.Adam(
        model.parameters(), lr=train.lr, weight_decay=train.weight_decay, fused=True
    )
    batches_per_epoch = batch_count(len(episodes), train=train)
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=train.epochs * batches_per_epoch
        )
        if train.lr_schedule == "cosine"
        else None
    )
    best_score, best_epoch, best_state = -1.0, 0, copy.deepcopy(model.state_dict())
    history: list[EpochRecord] = []
    started = time.perf_counter()
    for epoch in range(1, train.epochs + 1):
        epoch_started = time.perf_counter()
        model.train()
        sums = np.zeros(4)
        batches = epoch_batches(data.lengths, train=train, generator=generator)
        for chosen in batches:
            parts = train_step(
                model, optimizer, data=data, chosen=chosen, train=train, generator=generator
            )
            if scheduler is not None:
                scheduler.step()
            sums += parts
        train_seconds = time.perf_counter() - epoch_started
        eval_started = time.perf_counter()
        valid_ndcg = validation_ndcg5(
            model, validation, threshold=threshold, samples=train.eval_samples
        )
        loss, mse, kl, clustering = (sums / len(batches)).tolist()
        record = EpochRecord(
            epoch=epoch,
            loss=loss,
            mse=mse,
            kl=kl,
            clustering=clustering,
            valid_ndcg5=valid_ndcg,
            train_seconds=train_seconds,
            eval_seconds=time.perf_counter() - eval_started,
        )
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if valid_ndcg > best_score:
            best_score, best_epoch = valid_ndcg, epoch
            best_state = copy.deepcopy(model.state_dict())
        elif train.patience and epoch - best_epoch >= train.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    return TrainResult(model, best_epoch, len(history), history, time.perf_counter() - started)


def hide_users(
    model: TaNP, users: torch.Tensor, *, train: TrainConfig, generator: torch.Generator
) -> torch.Tensor:
    """With a shared unknown-user row, replace each episode's user id by it with probability
    `unknown_user_rate`, so the row learns what every user the service sees gets."""
    if model.config.user_input != "unknown":
        return users
    hidden = torch.rand(users.shape, generator=generator) < train.unknown_user_rate
    return users.masked_fill(hidden, model.config.unknown_user)


def train_step(
    model: TaNP,
    optimizer: torch.optim.Optimizer,
    *,
    data: Batch,
    chosen: torch.Tensor,
    train: TrainConfig,
    generator: torch.Generator,
) -> np.ndarray:
    """One optimiser step over the chosen episodes; returns (loss, mse, kl, clustering)."""
    lengths = data.lengths[chosen]
    width = int(lengths.max())
    items, labels = data.items[chosen, :width], data.labels[chosen, :width]
    split = context_target_split(
        lengths, context_min=train.context_min, width=width, generator=generator
    )
    users = hide_users(model, data.users[chosen], train=train, generator=generator)
    own_positives = None
    if model.config.neighbours and train.exclude_own_cooccurrence:
        # the episode holds the user's whole profile when it comes from a train user
        liked = (labels >= positive_threshold(model.config.label_min, model.config.label_max)) & (
            torch.arange(width)[None, :] < lengths[:, None]
        )
        counts = torch.zeros(len(chosen), model.config.num_items, dtype=torch.long)
        own_positives = counts.scatter_add_(1, items, liked.long()) > 0
    items, labels = torch.gather(items, 1, split.order), torch.gather(labels, 1, split.order)
    context, target = split.context, split.target
    output = model(
        context_items=items,
        context_labels=labels,
        context_mask=context,
        target_items=items,
        target_labels=labels,
        target_mask=target,
        users=users,
        own_positives=own_positives,
        sample=True,
    )
    parts = tanp_loss(
        output,
        target_labels=labels,
        target_mask=target,
        clustering_weight=train.lambda_clustering,
        clustering_target=train.clustering_target,
        kl_weight=train.kl_weight,
    )
    optimizer.zero_grad(set_to_none=True)
    parts.total.backward()
    optimizer.step()
    return np.array([float(value.detach()) for value in parts])


def validation_ndcg5(
    model: TaNP, episodes: EpisodeSet, *, threshold: float, samples: int = 0
) -> float:
    """Mean within-query NDCG@5 over the validation users (the selection metric).

    Scores only the query items (candidates), which is all this metric reads."""
    if len(episodes) == 0:
        return 0.0
    scores = query_scores(model, episodes, samples=samples)
    values = []
    for episode in range(len(episodes)):
        length = int(episodes.query_len[episode])
        relevant = episodes.query_labels[episode, :length] >= threshold
        in_order = relevant[rank(scores[episode, :length])]
        values.append(ndcg_binary(in_order, total_relevant=int(relevant.sum()), k=5))
    return float(np.mean(values))
