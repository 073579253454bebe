"""TaNP (Task-adaptive Neural Process, Lin et al., WWW 2021) as one batched torch module.

Role-named parts: item inputs, latent encoder (-> z), task encoder, memory unit, the FiLM decoder
(tanp.decoder) and the neighbour affinity (tanp.affinity). Episodes arrive padded: a batch axis B
and a point axis with a boolean mask. Pure: no losses, no optimiser, no files.
"""

from __future__ import annotations

import itertools
import math
from typing import NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from tanp.affinity import NeighbourAffinity
from tanp.config import TaNPConfig
from tanp.decoder import ModulatedDecoder
from tanp.shortlist import ShortlistHead

__all__ = [
    "BayesianAggregator",
    "Gaussian",
    "IdEmbedding",
    "LatentHead",
    "MemoryUnit",
    "PointEncoder",
    "TaNP",
    "TaNPConfig",
    "TaNPOutput",
    "TaskState",
    "masked_mean",
    "reparameterise",
]


class Gaussian(NamedTuple):
    """A diagonal Gaussian over z: mean and log-variance, each (B, Z)."""

    mu: Tensor
    logvar: Tensor


class TaskState(NamedTuple):
    """Everything the decoder needs from a support set; what the service caches.

    prior: q(z | support), each (B, Z); task: modulation input after the memory unit (B, T);
    assignment: soft cluster assignment C (B, K); support items (B, L) long, labels (B, L) and
    mask (B, L) bool: the neighbour affinity of any item is computed from them when scored.
    """

    prior: Gaussian
    task: Tensor
    assignment: Tensor
    support_items: Tensor
    support_labels: Tensor
    support_mask: Tensor

    def rows(self, rows: slice) -> TaskState:
        """The tasks `rows` of this batch of tasks (views; the support padding kept)."""
        return TaskState(
            Gaussian(self.prior.mu[rows], self.prior.logvar[rows]),
            self.task[rows],
            self.assignment[rows],
            self.support_items[rows],
            self.support_labels[rows],
            self.support_mask[rows],
        )


class TaNPOutput(NamedTuple):
    """One result type for every mode.

    prediction: (B, W) scores of the targets; prior: q(z | context); posterior: q(z | context and
    labelled targets) when target labels were given, else None; assignment: (B, K).
    """

    prediction: Tensor
    prior: Gaussian
    posterior: Gaussian | None
    assignment: Tensor


def _mlp(sizes: list[int], dropout: float) -> nn.Sequential:
    layers: list[nn.Module] = []
    for index, (width_in, width_out) in enumerate(itertools.pairwise(sizes)):
        layers.append(nn.Linear(width_in, width_out))
        if index < len(sizes) - 2:
            layers.extend([nn.Dropout(dropout), nn.ReLU()])
    return nn.Sequential(*layers)


def masked_mean(values: Tensor, mask: Tensor) -> Tensor:
    """Mean over axis 1 of (B, N, D) values where mask (B, N) is true; (B, D)."""
    weights = mask.to(values.dtype).unsqueeze(-1)
    return (values * weights).sum(1) / weights.sum(1).clamp_min(1.0)


class IdEmbedding(nn.Module):
    """Two-layer embedding of an id: the reference's one-hot Linear -> ReLU -> Linear -> ReLU.

    An `nn.Embedding` lookup equals the one-hot product with the first Linear's weight
    (its bias is folded into the table), at a fraction of the cost.
    """

    def __init__(self, count: int, *, first_dim: int, second_dim: int) -> None:
        super().__init__()
        self.first = nn.Embedding(count, first_dim)
        self.second = nn.Linear(first_dim, second_dim)
        # the one-hot Linear's default init: weight and bias each U(+-1/sqrt(count))
        bound = 1.0 / math.sqrt(count)
        nn.init.uniform_(self.first.weight, -2 * bound, 2 * bound)

    def forward(self, ids: Tensor) -> Tensor:
        """ids (...,) long -> (..., second_dim)."""
        return F.relu(self.second(F.relu(self.first(ids))))


class PointEncoder(nn.Module):
    """Encodes every (x_i, y_i) pair and aggregates a task's points into one vector.

    Used twice: as the latent path h_theta (-> z) and as the task encoder (-> task identity).
    `mean` is the reference's aggregation; `attention` weighs points by a learned score.
    """

    def __init__(
        self, *, x_dim: int, hidden: list[int], out_dim: int, dropout: float, aggregator: str
    ) -> None:
        super().__init__()
        self.pairs = _mlp([x_dim + 1, *hidden, out_dim], dropout)
        self.aggregator = aggregator
        self.attention = nn.Linear(out_dim, 1) if aggregator == "attention" else None

    def forward(self, x: Tensor, y: Tensor, mask: Tensor) -> Tensor:
        """x (B, N, X), y (B, N), mask (B, N) -> (B, out_dim)."""
        return self.aggregate(self.encode_pairs(x, y), mask)

    def encode_pairs(self, x: Tensor, y: Tensor) -> Tensor:
        """x (B, N, X), y (B, N) -> (B, N, out_dim), one vector per point."""
        return self.pairs(torch.cat([x, y.unsqueeze(-1)], dim=-1))

    def aggregate(self, encoded: Tensor, mask: Tensor) -> Tensor:
        """Encoded points (B, N, D) and mask (B, N) -> (B, D)."""
        if self.attention is None:
            return masked_mean(encoded, mask)
        logits = self.attention(torch.tanh(encoded)).squeeze(-1)  # (B, N)
        logits = logits.masked_fill(~mask, float("-inf"))
        weights = torch.softmax(logits, dim=1).nan_to_num(0.0).unsqueeze(-1)
        return (encoded * weights).sum(1)


class BayesianAggregator(nn.Module):
    """q(z | points) by Bayesian context aggregation (Volpp et al., ICLR 2021): each (x_i, y_i)
    gives a mean r_i and a precision p_i >= 0 per dimension, combined with a N(0, I) prior:
    precision 1 + sum p_i, mean sum p_i r_i / (1 + sum p_i). More points, narrower q(z)."""

    def __init__(self, *, x_dim: int, hidden: list[int], z_dim: int, dropout: float) -> None:
        super().__init__()
        self.pairs = _mlp([x_dim + 1, *hidden, 2 * z_dim], dropout)

    def forward(self, x: Tensor, y: Tensor, mask: Tensor) -> Gaussian:
        """x (B, N, X), y (B, N), mask (B, N) -> q(z) with mu, logvar (B, Z)."""
        mean, raw = self.pairs(torch.cat([x, y.unsqueeze(-1)], dim=-1)).chunk(2, dim=-1)
        precision = F.softplus(raw) * mask.unsqueeze(-1).to(raw.dtype)
        total = 1.0 + precision.sum(1)
        return Gaussian((precision * mean).sum(1) / total, -torch.log(total))


class LatentHead(nn.Module):
    """h -> (mu, log-variance) of z, as the reference's MuSigmaEncoder."""

    def __init__(self, in_dim: int, *, hidden_dim: int, z_dim: int) -> None:
        super().__init__()
        self.hidden = nn.Linear(in_dim, hidden_dim)
        self.mu = nn.Linear(hidden_dim, z_dim)
        self.logvar = nn.Linear(hidden_dim, z_dim)

    def forward(self, aggregated: Tensor) -> Gaussian:
        hidden = torch.relu(self.hidden(aggregated))
        return Gaussian(self.mu(hidden), self.logvar(hidden))


class MemoryUnit(nn.Module):
    """Global pool of k cluster centres; adds the soft-assigned centre to the task embedding.

    C_k = (1 + ||t - c_k|| / tau)^(-(tau+1)/2), normalised over k (Student-t kernel, with the
    reference's unsquared distance); t' = t + sum_k C_k c_k.
    """

    def __init__(self, *, clusters: int, dim: int, temperature: float) -> None:
        super().__init__()
        self.centres = nn.Parameter(nn.init.xavier_uniform_(torch.empty(clusters, dim)))
        self.temperature = temperature

    def forward(self, task: Tensor) -> tuple[Tensor, Tensor]:
        """task (B, T) -> assignment (B, K), modulated task (B, T)."""
        distance = torch.cdist(task, self.centres)  # (B, K)
        kernel = torch.pow(distance / self.temperature + 1.0, -(self.temperature + 1.0) / 2.0)
        assignment = kernel / kernel.sum(dim=1, keepdim=True)
        return assignment, task + assignment @ self.centres


class TaNP(nn.Module):
    """Support set -> (z, task identity) -> modulated decoder scores for any items.

    Buffers travel with the weights: `item_popularity` (positive counts among train users, for
    the popularity fallback), `item_features` (fixed point inputs) and the affinity's
    neighbour lists.
    """

    item_popularity: Tensor
    item_features: Tensor

    def __init__(self, config: TaNPConfig) -> None:
        super().__init__()
        self.config = config
        self.item_embedding = (
            IdEmbedding(
                config.num_items,
                first_dim=config.first_embedding_dim,
                second_dim=config.second_embedding_dim,
            )
            if config.item_id_input
            else None
        )
        self.user_embedding = (
            IdEmbedding(
                config.num_users + 1,
                first_dim=config.first_embedding_dim,
                second_dim=config.second_embedding_dim,
            )
            if config.user_input == "unknown"
            else None
        )
        self.latent_encoder: PointEncoder | None = None
        self.latent_head: LatentHead | None = None
        self.bayesian_latent: BayesianAggregator | None = None
        if config.latent_aggregation == "bayesian":
            self.bayesian_latent = BayesianAggregator(
                x_dim=config.x_dim,
                hidden=[config.enc_h1_dim, config.enc_h2_dim],
                z_dim=config.z_dim,
                dropout=config.dropout_rate,
            )
        else:
            self.latent_encoder = PointEncoder(
                x_dim=config.x_dim,
                hidden=[config.enc_h1_dim, config.enc_h2_dim],
                out_dim=config.latent_encoder_dim,
                dropout=config.dropout_rate,
                aggregator=config.aggregator,
            )
            self.latent_head = LatentHead(
                config.latent_encoder_dim, hidden_dim=config.latent_hidden_dim, z_dim=config.z_dim
            )
        self.task_encoder = PointEncoder(
            x_dim=config.x_dim,
            hidden=[config.taskenc_h1_dim, config.taskenc_h2_dim],
            out_dim=config.taskenc_final_dim,
            dropout=config.dropout_rate,
            aggregator=config.aggregator,
        )
        self.memory = MemoryUnit(
            clusters=config.clusters_k, dim=config.taskenc_final_dim, temperature=config.temperature
        )
        self.decoder = ModulatedDecoder(config)
        self.affinity = NeighbourAffinity(
            num_items=config.num_items,
            neighbours=config.neighbours,
            label_min=config.label_min,
            label_max=config.label_max,
        )
        self.register_buffer("item_popularity", torch.zeros(config.num_items))
        self.register_buffer(
            "item_features", torch.zeros(config.num_items, config.item_feature_dim)
        )
        # last and zero-initialised: the other parts' initial weights do not depend on it
        self.shortlist = ShortlistHead(config) if config.shortlist else None

    def point_inputs(self, items: Tensor, users: Tensor | None = None) -> Tensor:
        """items (B, N) long, users (B,) long or None (= unknown) -> x (B, N, X)."""
        parts = [] if self.item_embedding is None else [self.item_embedding(items)]
        if self.user_embedding is not None:
            if users is None:
                users = torch.full(
                    items.shape[:1], self.config.unknown_user, dtype=torch.long, device=items.device
                )
            user = self.user_embedding(users).unsqueeze(1).expand(-1, items.shape[1], -1)
            parts.append(user)
        if self.config.item_feature_dim:
            parts.append(self.item_features[items])
        return torch.cat(parts, dim=-1)

    def encode(self, *, x: Tensor, labels: Tensor, mask: Tensor, items: Tensor) -> TaskState:
        """Support points x (B, L, X), labels (B, L), mask (B, L), items (B, L) -> TaskState."""
        prior = self.latent(x, labels, mask)
        assignment, task = self.memory(self.task_encoder(x, labels, mask))
        return TaskState(prior, task, assignment, items, labels, mask)

    def latent(self, x: Tensor, labels: Tensor, mask: Tensor) -> Gaussian:
        """q(z | points): the latent path alone (prior over the support, posterior over all)."""
        if self.bayesian_latent is not None:
            return self.bayesian_latent(x, labels, mask)
        assert self.latent_encoder is not None and self.latent_head is not None
        return self.latent_head(self.latent_encoder(x, labels, mask))

    def target_affinity(self, state: TaskState, targets: Tensor | None) -> Tensor | None:
        """(B, W, 3) affinity of targets (B, W), or (B, N, 3) of the whole catalog when targets
        is None; None when the model has no neighbour path."""
        if not self.config.neighbours:
            return None
        support = {
            "items": state.support_items,
            "labels": state.support_labels,
            "mask": state.support_mask,
        }
        if targets is None:
            return self.affinity.catalog(**support)
        return self.affinity.targets(**support, targets=targets)

    def decode(
        self,
        *,
        x: Tensor,
        z: Tensor,
        state: TaskState,
        affinity: Tensor | None,
        item_part: Tensor | None = None,
    ) -> Tensor:
        """Targets x (B, N, X) (or (1, N, X) shared), z (B, Z) or (S, B, Z) -> scores;
        `item_part`: the decoder's first-layer item part of x when precomputed (Scorer)."""
        return self.decoder(
            x=x,
            item_part=self.decoder.item_part(x) if item_part is None else item_part,
            z=z,
            task=state.task,
            affinity=affinity,
        )

    def forward(
        self,
        *,
        context_items: Tensor,
        context_labels: Tensor,
        context_mask: Tensor,
        target_items: Tensor,
        target_labels: Tensor | None = None,
        target_mask: Tensor | None = None,
        users: Tensor | None = None,
        sample: bool = False,
        noise: Tensor | None = None,
        affinity_keep: Tensor | None = None,
    ) -> TaNPOutput:
        """Score targets (B, W) given a context (B, L).

        With target labels, target_mask (B, W) marks the labelled targets (unmarked ones, e.g.
        sampled negatives, are only scored) and the output carries the posterior
        q(z | context and labelled targets). Training (the reference): sample=True draws z
        from that posterior. Inference: sample=False uses the mean of q(z | context), so scores
        are deterministic. The random parts can be handed in (a trainer that shards a batch
        over processes draws them for the whole batch): noise (B, Z) ~ N(0, I) for z, and
        affinity_keep (B,) bool for the affinity dropout (drawn here in training mode if None).
        """
        context_x = self.point_inputs(context_items, users)
        target_x = self.point_inputs(target_items, users)
        state = self.encode(
            x=context_x, labels=context_labels, mask=context_mask, items=context_items
        )
        posterior = None
        if target_labels is not None:
            if target_mask is None:
                target_mask = torch.ones_like(target_labels, dtype=torch.bool)
            # only labelled targets enter the posterior: the trailing columns no episode labels
            # (the sampled negatives) are cut before encoding, not encoded and masked out
            labelled = torch.nonzero(target_mask.any(0))
            width = int(labelled.max()) + 1 if labelled.numel() else 0
            posterior = self.latent(
                torch.cat([context_x, target_x[:, :width]], dim=1),
                torch.cat([context_labels, target_labels[:, :width]], dim=1),
                torch.cat([context_mask, target_mask[:, :width]], dim=1),
            )
        source = posterior if posterior is not None and sample else state.prior
        if not sample:
            z = source.mu
        elif noise is None:
            z = reparameterise(source)
        else:
            z = source.mu + torch.exp(0.5 * source.logvar) * noise
        affinity = self.target_affinity(state, target_items)
        if affinity is not None and self.training and self.config.affinity_dropout > 0:
            if affinity_keep is None:
                drawn = torch.rand(affinity.shape[0], device=affinity.device)
                affinity_keep = drawn >= self.config.affinity_dropout
            affinity = affinity * affinity_keep.to(affinity.dtype)[:, None, None]
        prediction = self.decode(x=target_x, z=z, state=state, affinity=affinity)
        return TaNPOutput(prediction, state.prior, posterior, state.assignment)


def reparameterise(gaussian: Gaussian, generator: torch.Generator | None = None) -> Tensor:
    """One draw z = mu + exp(logvar / 2) * eps, eps ~ N(0, I)."""
    std = torch.exp(0.5 * gaussian.logvar)
    noise = torch.randn(std.shape, generator=generator, device=std.device, dtype=std.dtype)
    return gaussian.mu + std * noise
