"""Batched episodic training of TaNP: every batch of episodes goes through one forward.

Each epoch redraws every training episode: a random support set (at most `support_size`, at most
half the user's points) and up to `query_cap` labelled targets from the rest, plus `negatives`
catalog items drawn uniformly as unlabelled candidates for the listwise loss. With `folds` > 0
the item side a training user's episode sees (features, neighbour lists) is computed from the
train users of the other folds, so no training user's own rows are in the statistics that
describe its items: training sees what a new user gets. Batches hold one fold each; the
model's item buffers are switched to that fold's tables for the step and back to the tables of
all train users for validation and for the saved model. Adam; selection and early stopping on
validation users only (NDCG@5 + catalog Recall@20, z = posterior mean).

Under torchrun every process draws the same batches (same seeds) and trains on its shard of each
(DistributedDataParallel averages the gradients; gloo on CPU, nccl on GPU); every process
computes the same validation, so selection agrees without messages; only rank 0 writes.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import distributed as dist
from torch.nn.parallel import DistributedDataParallel

from tanp.affinity import sorted_neighbours
from tanp.config import TaNPConfig
from tanp.model import TaNP
from tanp.scoring import Scorer
from training.baselines import selection_score
from training.compare import per_user_headline
from training.config import TrainConfig
from training.episodes import EpisodeSet, Prepared, all_user_episodes
from training.evaluate import support_state, tanp_scores
from training.item_stats import ItemTables, TableSpec, item_tables
from training.losses import tanp_loss

logger = logging.getLogger(__name__)


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
    train_seconds: float
    eval_seconds: float

    @property
    def valid_selection(self) -> float:
        return self.valid_ndcg5 + self.valid_recall20


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
class TableTensors:
    """One ItemTables as the tensors the model's buffers point to (neighbour rows sorted)."""

    popularity: torch.Tensor
    features: torch.Tensor
    neighbour_index: torch.Tensor
    neighbour_weight: torch.Tensor

    @classmethod
    def of(cls, tables: ItemTables, device: torch.device | str = "cpu") -> TableTensors:
        index, weight = sorted_neighbours(
            torch.from_numpy(tables.neighbour_index), torch.from_numpy(tables.neighbour_weight)
        )
        return cls(
            popularity=torch.from_numpy(tables.popularity).to(device),
            features=torch.from_numpy(tables.features).to(device),
            neighbour_index=index.to(device),
            neighbour_weight=weight.to(device),
        )

    def to(self, device: torch.device | str) -> TableTensors:
        return TableTensors(*(value.to(device) for value in vars(self).values()))

    def install(self, model: TaNP) -> None:
        """Point the model's item buffers at these tensors (no copy)."""
        model.item_popularity = self.popularity
        model.item_features = self.features
        model.affinity.neighbour_index = self.neighbour_index
        model.affinity.neighbour_weight = self.neighbour_weight


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
        label_min=interactions.label_min,
        label_max=interactions.label_max,
    )
    torch.manual_seed(train.seed)
    model = TaNP(config)
    tables = item_tables(prepared, prepared.users_of("train"), spec=table_spec(config, train))
    TableTensors.of(tables).install(model)
    return model, tables


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
    z_dim: int = 0,
    affinity_dropout: float = 0.0,
    unknown_user: int | None = None,
    negative_distribution: torch.Tensor | None = None,
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
    if negative_distribution is None:
        negatives = torch.randint(0, num_items, (len(chosen), count), generator=generator)
        expected = torch.full(negatives.shape, count / num_items)
    else:
        negatives = torch.multinomial(
            negative_distribution.expand(len(chosen), -1),
            count,
            replacement=True,
            generator=generator,
        )
        expected = count * negative_distribution[negatives]
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


@dataclass(frozen=True)
class TrainingData:
    """What the trainer built before its first step, for the features-only baseline to reuse:
    the training profiles and the item tables of each fold and of all train users."""

    profiles: Profiles
    fold_tensors: list[TableTensors]
    full_tensors: TableTensors


def negative_distribution(popularity: torch.Tensor, train: TrainConfig) -> torch.Tensor | None:
    """Where the listwise negatives are drawn from: (1 - w) uniform + w in proportion to
    popularity^0.75 (w = negative_popularity); None for uniform draws."""
    share = train.negative_popularity
    if share <= 0:
        return None
    weights = popularity.detach().to("cpu", torch.float64).clamp_min(0) ** 0.75
    uniform = torch.full_like(weights, 1.0 / weights.numel())
    tilted = weights / weights.sum() if weights.sum() > 0 else uniform
    return ((1 - share) * uniform + share * tilted).float()


def hidden_users(
    users: torch.Tensor, *, unknown_user: int | None, rate: float, generator: torch.Generator
) -> torch.Tensor:
    if unknown_user is None:
        return users
    hidden = torch.rand(users.shape, generator=generator) < rate
    return users.masked_fill(hidden, unknown_user)


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


def fold_tables(
    prepared: Prepared, *, spec: TableSpec, full: ItemTables, train: TrainConfig
) -> tuple[np.ndarray | None, list[ItemTables]]:
    """Each train user's fold (indexed by user) and each fold's tables from the others."""
    if train.folds < 2:
        return None, [full]
    users = prepared.users_of("train")
    rng = np.random.default_rng(train.seed + 7)
    fold_of_train_user = rng.permutation(users.size) % train.folds
    fold_of_user = np.zeros(len(prepared.interactions.user_ids), dtype=np.int64)
    fold_of_user[users] = fold_of_train_user
    tables = [
        item_tables(prepared, users[fold_of_train_user != fold], spec=spec, reference=full)
        for fold in range(train.folds)
    ]
    return fold_of_user, tables


FULL_VALIDATION_ITEMS = 8192  # above this, validation ranks the candidate stage's items only
VALIDATION_CANDIDATES = 2000


def validation_headline(
    model: TaNP, episodes: EpisodeSet, *, threshold: float, samples: int = 0
) -> dict[str, np.ndarray]:
    """Per-user validation NDCG@5 and catalog Recall@20 (the selection metrics). Over a big
    catalog each epoch ranks only each user's query items and candidate-stage items (what the
    service does above its full-scoring limit); the test users are always ranked over all."""
    if model.config.num_items <= FULL_VALIDATION_ITEMS:
        scores = tanp_scores(model, episodes, samples=samples)
    else:
        scores = candidate_scores(model, episodes, count=VALIDATION_CANDIDATES)
    return per_user_headline(episodes, scores, threshold=threshold)


def candidate_scores(model: TaNP, episodes: EpisodeSet, *, count: int) -> np.ndarray:
    """(E, items): -inf except each episode's query items and its candidate stage."""
    scorer = Scorer(model)
    scores = np.full((len(episodes), model.config.num_items), -np.inf, dtype=np.float32)
    for start in range(0, len(episodes), 64):
        rows = slice(start, min(start + 64, len(episodes)))
        state = support_state(scorer, episodes, rows)
        chosen = []
        for offset, episode in enumerate(range(rows.start, rows.stop)):
            one = state.rows(slice(offset, offset + 1))
            candidates = scorer.candidates(one, count=count)[0].cpu()
            query = torch.from_numpy(episodes.query(episode)[0])
            chosen.append(torch.cat([candidates, query]).unique())
        width = max(len(items) for items in chosen)
        padded = torch.stack(
            [torch.cat([items, items[:1].expand(width - len(items))]) for items in chosen]
        )
        values = scorer.scores(state, candidates=padded).float().cpu().numpy()
        for offset, items in enumerate(chosen):
            scores[rows.start + offset, items.numpy()] = values[offset, : len(items)]
    return scores


def train_model(
    prepared: Prepared,
    *,
    model_config: TaNPConfig,
    train: TrainConfig,
    on_epoch: Callable[[EpochRecord], None] | None = None,
    device: torch.device | str = "cpu",
) -> TrainResult:
    """Train, selecting the epoch with the best validation NDCG@5 + Recall@20; test users are
    never read. The model trains on `device`; episodes are drawn on the CPU."""
    started = time.perf_counter()
    model, full = build_untrained(prepared, model_config, train)
    model.to(device)
    spec = table_spec(model.config, train)
    fold_of_user, tables = fold_tables(prepared, spec=spec, full=full, train=train)
    fold_tensors = [TableTensors.of(table, device) for table in tables]
    full_tensors = TableTensors.of(full, device)
    full_tensors.install(model)
    profiles = training_profiles(
        prepared, train=train, fold_of_user=fold_of_user, seen=[table.seen for table in tables]
    )
    generator = torch.Generator().manual_seed(train.seed)
    validation = (
        all_user_episodes(prepared, split_name="valid", rng=np.random.default_rng(train.seed + 1))
        if train.valid_all_users
        else prepared.episodes["valid"]
    )
    threshold = prepared.interactions.positive_threshold
    optimizer = torch.optim.Adam(
        model.parameters(), lr=train.lr, weight_decay=train.weight_decay, fused=True
    )
    batches_per_epoch = len(
        epoch_batches(profiles, batch_size=train.batch_size, generator=torch.Generator())
    )
    scheduler = (
        torch.optim.lr_scheduler.CosineAnnealingLR(
            optimizer, T_max=train.epochs * batches_per_epoch
        )
        if train.lr_schedule == "cosine"
        else None
    )
    shard = Shard.current()
    network: torch.nn.Module = model
    if shard.world > 1:
        # every process holds the same item tables and swaps them alike: no buffer broadcast
        network = DistributedDataParallel(
            model,
            broadcast_buffers=False,
            device_ids=[torch.device(device).index]
            if torch.device(device).type == "cuda"
            else None,
        )
    unknown_user = model.config.unknown_user if model.config.user_input == "unknown" else None
    distributions = [negative_distribution(tensors.popularity, train) for tensors in fold_tensors]
    best_score, best_epoch, best_state = -np.inf, 0, copy.deepcopy(model.state_dict())
    averaged = (
        torch.optim.swa_utils.AveragedModel(
            model, multi_avg_fn=torch.optim.swa_utils.get_ema_multi_avg_fn(train.weight_average)
        )
        if train.weight_average > 0
        else None
    )
    history: list[EpochRecord] = []
    for epoch in range(1, train.epochs + 1):
        epoch_started = time.perf_counter()
        model.train()
        sums = np.zeros(5)
        batches = epoch_batches(profiles, batch_size=train.batch_size, generator=generator)
        for chosen in batches:
            if len(chosen) < max(2, shard.world):
                # every process needs an episode, and one episode is no batch for the DEC
                # target: the rule is the same alone and under torchrun, so both train alike
                continue
            fold_tensors[int(profiles.folds[chosen[0]])].install(model)
            batch = draw_step(
                profiles,
                chosen,
                train=train,
                num_items=model.config.num_items,
                threshold=threshold,
                generator=generator,
                z_dim=model.config.z_dim,
                affinity_dropout=model.config.affinity_dropout,
                unknown_user=unknown_user,
                negative_distribution=distributions[int(profiles.folds[chosen[0]])],
            )
            rows = shard.rows(len(chosen))
            sums += train_step(
                network,
                optimizer,
                config=model.config,
                batch=batch.rows(rows).to(torch.device(device)),
                train=train,
                scale=shard.world * (rows.stop - rows.start) / len(chosen),
            )
            if scheduler is not None:
                scheduler.step()
            if averaged is not None:
                averaged.update_parameters(model)
        full_tensors.install(model)
        if averaged is not None:
            # validate (and keep) the averaged weights; training goes on from the raw ones
            raw = [parameter.detach().clone() for parameter in model.parameters()]
            averaged_parameters = list(averaged.module.parameters())
            with torch.no_grad():
                for parameter, average in zip(model.parameters(), averaged_parameters, strict=True):
                    parameter.copy_(average)
        train_seconds = time.perf_counter() - epoch_started
        eval_started = time.perf_counter()
        valid = validation_headline(
            model, validation, threshold=threshold, samples=train.eval_samples
        )
        loss, pointwise, listwise, kl, clustering = (sums / max(len(batches), 1)).tolist()
        record = EpochRecord(
            epoch=epoch,
            loss=loss,
            pointwise=pointwise,
            listwise=listwise,
            kl=kl,
            clustering=clustering,
            valid_ndcg5=float(np.nanmean(valid["NDCG@5"])),
            valid_recall20=float(np.nanmean(valid["Recall@20"])),
            train_seconds=train_seconds,
            eval_seconds=time.perf_counter() - eval_started,
        )
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        score = selection_score(valid)
        if score > best_score:
            best_score, best_epoch = score, epoch
            best_state = copy.deepcopy(model.state_dict())
        if averaged is not None:
            with torch.no_grad():
                for parameter, value in zip(model.parameters(), raw, strict=True):
                    parameter.copy_(value)
        if score <= best_score and train.patience and epoch - best_epoch >= train.patience:
            break
    model.load_state_dict(best_state)
    model.eval()
    data = TrainingData(profiles, fold_tensors, full_tensors)
    return TrainResult(
        model, best_epoch, len(history), history, time.perf_counter() - started, data, train
    )
