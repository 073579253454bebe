"""Training episodes as tensors: every train user's profile, one epoch's batches, one step's draw.

Each step redraws its episodes (support, labelled targets, uniform catalog negatives, z's noise,
the affinity dropout); `features_baseline_draws` is the features-only baseline's draw of them.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from training.config import TrainConfig
from training.episodes import Prepared, all_user_episodes

FEATURES_BASELINE_BATCH = 64  # episodes per draw of the features-only baseline


@dataclass(frozen=True)
class Profiles:
    """Every training episode's points (support and query together), padded: items/labels
    (E, P), lengths (E,), users (E,), and the fold whose item tables describe each."""

    items: torch.Tensor
    labels: torch.Tensor
    lengths: torch.Tensor
    users: torch.Tensor
    folds: torch.Tensor


def training_profiles(
    prepared: Prepared,
    *,
    train: TrainConfig,
    fold_of_user: np.ndarray | None,
    seen: list[np.ndarray],
) -> Profiles:
    """One profile per training episode; points whose item no user of its fold's tables has
    are dropped (as test episodes drop items no train user has)."""
    if train.episodes == "authors":
        episodes = prepared.episodes["train"]
    else:
        episodes = all_user_episodes(
            prepared,
            rng=np.random.default_rng(train.seed),
            min_support=max(1, train.min_interactions // 2),
        )
    rows: list[tuple[np.ndarray, np.ndarray, int, int]] = []
    for episode in range(len(episodes)):
        support_items, support_labels = episodes.support(episode)
        query_items, query_labels = episodes.query(episode)
        items = np.concatenate([support_items, query_items])
        labels = np.concatenate([support_labels, query_labels])
        user = int(episodes.users[episode])
        fold = 0 if fold_of_user is None else int(fold_of_user[user])
        keep = seen[fold][items]
        if keep.sum() >= 2:  # at least one support and one target point
            rows.append((items[keep], labels[keep], user, fold))
    width = max(len(items) for items, _, _, _ in rows)
    item_array = np.zeros((len(rows), width), dtype=np.int64)
    label_array = np.zeros((len(rows), width), dtype=np.float32)
    for row, (items, labels, _, _) in enumerate(rows):
        item_array[row, : len(items)] = items
        label_array[row, : len(labels)] = labels
    return Profiles(
        items=torch.from_numpy(item_array),
        labels=torch.from_numpy(label_array),
        lengths=torch.tensor([len(items) for items, _, _, _ in rows]),
        users=torch.tensor([user for _, _, user, _ in rows]),
        folds=torch.tensor([fold for _, _, _, fold in rows]),
    )


def epoch_batches(
    profiles: Profiles, *, batch_size: int, generator: torch.Generator
) -> list[torch.Tensor]:
    """One epoch's batches of profile indices: each batch from one fold, shuffled."""
    batches: list[torch.Tensor] = []
    for fold in profiles.folds.unique().tolist():
        members = torch.nonzero(profiles.folds == fold).flatten()
        members = members[torch.randperm(len(members), generator=generator)]
        batches.extend(
            members[start : start + batch_size] for start in range(0, len(members), batch_size)
        )
    order = torch.randperm(len(batches), generator=generator).tolist()
    return [batches[index] for index in order]


@dataclass(frozen=True)
class StepBatch:
    """One step's tensors: support (B, L), targets (B, W) = labelled query points then sampled
    negatives, with the masks the model and the loss need."""

    support_items: torch.Tensor
    support_labels: torch.Tensor
    support_mask: torch.Tensor
    target_items: torch.Tensor
    target_labels: torch.Tensor
    target_mask: torch.Tensor
    positive: torch.Tensor
    candidates: torch.Tensor
    correction: torch.Tensor  # (B, W): subtracted from the logits in the listwise loss
    users: torch.Tensor
    noise: torch.Tensor  # (B, Z) ~ N(0, I): the draw of z from the posterior
    affinity_keep: torch.Tensor  # (B,) bool: the episodes that see the neighbour affinity

    def rows(self, rows: slice) -> StepBatch:
        """The episodes `rows` of this batch (one process's shard)."""
        return StepBatch(*(value[rows] for value in vars(self).values()))

    def to(self, device: torch.device) -> StepBatch:
        return StepBatch(*(value.to(device) for value in vars(self).values()))


def draw_step(
    profiles: Profiles,
    chosen: torch.Tensor,
    *,
    train: TrainConfig,
    num_items: int,
    threshold: float,
    generator: torch.Generator,
    z_dim: int,
    affinity_dropout: float,
    unknown_user: int | None,
) -> StepBatch:
    """Redraw the chosen episodes: a random permutation of each profile's points; the first
    min(support_size, n // 2) are the support, up to query_cap of the rest the labelled
    targets; then `negatives` uniform catalog items per episode; then the noise of z and the
    affinity dropout of each episode; with a shared unknown-user row (unknown_user), each
    episode's user id is replaced by it with probability `unknown_user_rate`, so the row learns
    what every user the service sees gets."""
    lengths = profiles.lengths[chosen]
    width = int(lengths.max())
    items = profiles.items[chosen, :width]
    labels = profiles.labels[chosen, :width]
    keys = torch.rand(items.shape, generator=generator)
    keys = keys.masked_fill(torch.arange(width)[None, :] >= lengths[:, None], float("inf"))
    order = keys.argsort(dim=1)
    items, labels = items.gather(1, order), labels.gather(1, order)
    support_count = torch.clamp(lengths // 2, max=train.support_size)
    query_count = torch.clamp(lengths - support_count, max=train.query_cap)
    support_width = int(support_count.max())
    positions = torch.arange(width)[None, :]
    support_mask = positions[:, :support_width] < support_count[:, None]
    # the query points start after each episode's own support: shift every row left by it
    shift = (positions + support_count[:, None]).clamp_max(width - 1)
    query_width = int(query_count.max())
    query_items = items.gather(1, shift)[:, :query_width]
    query_labels = labels.gather(1, shift)[:, :query_width]
    query_mask = positions[:, :query_width] < query_count[:, None]
    # more draws than the catalog has items add nothing but duplicates
    count = min(train.negatives, num_items)
    negatives = torch.randint(0, num_items, (len(chosen), count), generator=generator)
    expected = torch.full(negatives.shape, count / num_items)
    target_items = torch.cat([query_items, negatives], dim=1)
    target_mask = torch.cat([query_mask, torch.zeros_like(negatives, dtype=torch.bool)], dim=1)
    target_labels = torch.cat([query_labels, torch.zeros(negatives.shape)], dim=1)
    support_items = items[:, :support_width]
    in_support = (
        target_items.unsqueeze(-1) == support_items.unsqueeze(1)
    ) & support_mask.unsqueeze(1)
    candidates = torch.cat([query_mask, torch.ones_like(negatives, dtype=torch.bool)], dim=1)
    candidates &= ~in_support.any(-1)
    positive = target_mask & (target_labels >= threshold)
    # sampled softmax: a drawn item's logit is corrected by log(its expected draws)
    correction = torch.cat([torch.zeros(query_mask.shape), torch.log(expected)], dim=1)
    return StepBatch(
        support_items=support_items,
        support_labels=labels[:, :support_width],
        support_mask=support_mask,
        target_items=target_items,
        target_labels=target_labels,
        target_mask=target_mask,
        positive=positive,
        candidates=candidates,
        correction=correction,
        users=hidden_users(
            profiles.users[chosen],
            unknown_user=unknown_user,
            rate=train.unknown_user_rate,
            generator=generator,
        ),
        noise=torch.randn((len(chosen), z_dim), generator=generator),
        affinity_keep=torch.rand(len(chosen), generator=generator) >= affinity_dropout,
    )


def hidden_users(
    users: torch.Tensor, *, unknown_user: int | None, rate: float, generator: torch.Generator
) -> torch.Tensor:
    if unknown_user is None:
        return users
    hidden = torch.rand(users.shape, generator=generator) < rate
    return users.masked_fill(hidden, unknown_user)


def features_baseline_draws(
    profiles: Profiles,
    *,
    folds: int,
    train: TrainConfig,
    num_items: int,
    threshold: float,
    seed: int,
) -> Iterator[tuple[int, StepBatch]]:
    """(fold, batch): one draw of every training episode for the features-only baseline
    (training.features_logreg), fold by fold, FEATURES_BASELINE_BATCH episodes at a time; the
    trainer's draw without z's noise, affinity dropout or hidden users. Pinned by a test, so a
    change to `draw_step` cannot move the baseline's numbers unseen."""
    generator = torch.Generator().manual_seed(seed)
    for fold in range(folds):
        members = torch.nonzero(profiles.folds == fold).flatten()
        for start in range(0, len(members), FEATURES_BASELINE_BATCH):
            yield (
                fold,
                draw_step(
                    profiles,
                    members[start : start + FEATURES_BASELINE_BATCH],
                    train=train,
                    num_items=num_items,
                    threshold=threshold,
                    generator=generator,
                    z_dim=0,
                    affinity_dropout=0.0,
                    unknown_user=None,
                ),
            )
