"""TaNP (Task-adaptive Neural Process, Lin et al., WWW 2021) as one batched torch module.

Role-named parts: item inputs (fixed item features, optional id/user embeddings), latent encoder
h_theta (-> z), task encoder, memory unit (global pool of cluster centres), FiLM-modulated
decoder with a taste head (z against the item's features) and the neighbour affinity
(tanp.affinity) as decoder inputs. Episodes arrive padded: every tensor has a batch axis B and a
point axis with a boolean mask. The model is pure: no losses, no optimiser. Knows nothing about
files, data formats or the service.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass
from typing import Any, Literal, NamedTuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from tanp.affinity import FEATURES as AFFINITY_FEATURES
from tanp.affinity import NeighbourAffinity

DecoderKind = Literal["film", "gating_film", "none"]
UserInput = Literal["none", "unknown"]
Aggregator = Literal["mean", "attention"]


@dataclass(frozen=True)
class TaNPConfig:
    """Architecture of one TaNP; stored verbatim in every checkpoint manifest.

    Defaults are the reference notebook's hyper-parameters (the `reference` preset).
    `item_feature_dim` > 0: fixed item features (the `item_features` buffer, computed offline
    from train users only: item factors, content factors, popularity) are every point's input.
    `item_id_input`: a learned per-item id embedding as well (the reference's only input).
    `user_input="unknown"` keeps a user table whose last row is a shared unknown-user embedding.
    `film_gamma_offset` = 1 centres FiLM's scale at identity (gamma = 1 + tanh(W t)); the
    reference's 0 scales every hidden unit by ~tanh(0) at initialisation.
    `neighbours` = K > 0 stores each item's K most similar items and feeds the decoder their
    affinity to the support set (tanp.affinity); `affinity_dropout` hides it from a training
    episode with that probability, so z and the task path must learn the user's taste too.
    `taste_head`: the score gains (W z) . x_i, z read against the target's own features.
    `affinity_skip`: the score also gains a linear term in the affinity features, so the
    item-kNN ranking itself is one weight away.
    """

    num_items: int
    num_users: int = 0
    user_input: UserInput = "none"
    item_id_input: bool = True
    item_feature_dim: int = 0
    first_embedding_dim: int = 32
    second_embedding_dim: int = 16
    z1_dim: int = 32
    z2_dim: int = 32
    z_dim: int = 32
    enc_h1_dim: int = 64
    enc_h2_dim: int = 64
    taskenc_h1_dim: int = 128
    taskenc_h2_dim: int = 64
    taskenc_final_dim: int = 64
    clusters_k: int = 7
    temperature: float = 1.0
    dec_h1_dim: int = 128
    dec_h2_dim: int = 128
    dec_h3_dim: int = 128
    dropout_rate: float = 0.0
    decoder: DecoderKind = "film"
    aggregator: Aggregator = "mean"
    film_gamma_offset: float = 0.0
    embedding_init_std: float = 0.0
    logvar_init: float = 0.0
    neighbours: int = 0
    affinity_scale: float = 1.0
    affinity_dropout: float = 0.0
    taste_head: bool = False
    affinity_skip: bool = False
    label_min: float = 0.0
    label_max: float = 1.0

    def __post_init__(self) -> None:
        if self.num_items < 1:
            raise ValueError("num_items must be positive")
        for name in ("num_users", "item_feature_dim", "neighbours", "clusters_k", "z_dim"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.user_input == "unknown" and self.num_users < 1:
            raise ValueError("user_input='unknown' needs num_users >= 1")
        if self.decoder not in ("film", "gating_film", "none"):
            raise ValueError(f"unknown decoder {self.decoder!r}")
        if self.aggregator not in ("mean", "attention"):
            raise ValueError(f"unknown aggregator {self.aggregator!r}")
        if self.x_dim < 1:
            raise ValueError("a point needs an input: item_id_input, item_feature_dim or users")
        if not 0.0 <= self.affinity_dropout < 1.0:
            raise ValueError("affinity_dropout must be within [0, 1)")

    @property
    def x_dim(self) -> int:
        """Width of one point's input x: item embedding + user embedding + item features."""
        user = self.second_embedding_dim if self.user_input == "unknown" else 0
        item = self.second_embedding_dim if self.item_id_input else 0
        return item + user + self.item_feature_dim

    @property
    def unknown_user(self) -> int:
        """Row of the user table shared by every user not seen in training."""
        return self.num_users

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TaNPConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown model_config fields: {', '.join(unknown)}")
        return cls(**values)


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

    def __init__(
        self, count: int, *, first_dim: int, second_dim: int, init_std: float = 0.0
    ) -> None:
        super().__init__()
        self.first = nn.Embedding(count, first_dim)
        self.second = nn.Linear(first_dim, second_dim)
        if init_std > 0:
            nn.init.normal_(self.first.weight, std=init_std)
        else:
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


class LatentHead(nn.Module):
    """h -> (mu, log-variance) of z, as the reference's MuSigmaEncoder."""

    def __init__(
        self, in_dim: int, *, hidden_dim: int, z_dim: int, logvar_init: float = 0.0
    ) -> None:
        super().__init__()
        self.hidden = nn.Linear(in_dim, hidden_dim)
        self.mu = nn.Linear(hidden_dim, z_dim)
        self.logvar = nn.Linear(hidden_dim, z_dim)
        if logvar_init:
            # start with a narrow q(z) so early samples of z carry signal, not noise
            nn.init.constant_(self.logvar.bias, logvar_init)

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


class ModulatedDecoder(nn.Module):
    """Three hidden layers over [x, z, affinity], each modulated by the task embedding, then one
    output, plus the taste head (W z) . x when configured.

    film: h = h * (offset + tanh(W_g t)) + tanh(W_b t); gating_film mixes gamma/beta with a
    sigmoid gate and a third transform as in the reference's Gating_Decoder; none: no modulation.
    """

    def __init__(self, config: TaNPConfig) -> None:
        super().__init__()
        widths = [config.dec_h1_dim, config.dec_h2_dim, config.dec_h3_dim]
        self.kind = config.decoder
        self.gamma_offset = config.film_gamma_offset
        self.input_x = nn.Linear(config.x_dim, widths[0])
        self.input_z = nn.Linear(config.z_dim, widths[0], bias=False)
        # cosine similarities are small (~0.01-0.1); the scale brings them to the range of
        # the other inputs so the first layer uses them from the start
        self.affinity_scale = config.affinity_scale
        self.input_affinity = (
            nn.Linear(AFFINITY_FEATURES, widths[0], bias=False) if config.neighbours else None
        )
        self.hidden = nn.ModuleList(
            [nn.Linear(width_in, width_out) for width_in, width_out in itertools.pairwise(widths)]
        )
        transforms = {"film": 2, "gating_film": 4, "none": 0}[config.decoder]
        self.modulation = nn.ModuleList(
            [
                nn.Linear(config.taskenc_final_dim, width * transforms, bias=False)
                for width in widths
            ]
            if transforms
            else []
        )
        self.dropout = nn.Dropout(config.dropout_rate)
        self.output = nn.Linear(widths[-1], 1)
        self.taste = (
            nn.Linear(config.z_dim, config.x_dim, bias=False) if config.taste_head else None
        )
        self.affinity_skip = (
            nn.Linear(AFFINITY_FEATURES, 1, bias=False)
            if config.affinity_skip and config.neighbours
            else None
        )

    def item_part(self, x: Tensor) -> Tensor:
        """The item side of the first layer, W_x x + b: (..., X) -> (..., H1). Precomputable."""
        return self.input_x(x)

    def forward(
        self, *, x: Tensor, first: Tensor, z: Tensor, task: Tensor, affinity: Tensor | None
    ) -> Tensor:
        """Targets x (B, N, X) with first = item_part(x), z (B, Z) or (S, B, Z), task (B, T),
        affinity (B, N, 3) or None. Returns scores (B, N), or (S, B, N) for S draws of z."""
        hidden = first + self.input_z(z).unsqueeze(-2)
        if self.input_affinity is not None and affinity is not None:
            hidden = hidden + self.input_affinity(affinity * self.affinity_scale)
        layers: list[nn.Module] = [nn.Identity(), *self.hidden]
        for index, layer in enumerate(layers):
            if index > 0:
                hidden = layer(hidden)
            if self.modulation:
                hidden = self._modulate(hidden, self.modulation[index](task))
            hidden = F.relu(self.dropout(hidden))
        scores = self.output(hidden).squeeze(-1)
        if self.affinity_skip is not None and affinity is not None:
            scores = scores + self.affinity_skip(affinity * self.affinity_scale).squeeze(-1)
        if self.taste is not None:
            # (..., B, 1, X) against (B, N, X): the taste head, one dot product per target
            scores = scores + (self.taste(z).unsqueeze(-2) * x).sum(-1)
        return scores

    def _modulate(self, hidden: Tensor, transforms: Tensor) -> Tensor:
        # transforms (B, width * m) broadcast over the point axis of hidden (..., B, N, width)
        parts = transforms.unsqueeze(-2).chunk(2 if self.kind == "film" else 4, dim=-1)
        gamma, beta = torch.tanh(parts[0]), torch.tanh(parts[1])
        if self.kind == "gating_film":
            eta, gate = torch.tanh(parts[2]), torch.sigmoid(parts[3])
            gamma = gamma * gate + eta * (1 - gate)
            beta = beta * gate + eta * (1 - gate)
        return torch.addcmul(beta, hidden, gamma + self.gamma_offset)


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
                init_std=config.embedding_init_std,
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
        self.latent_encoder = PointEncoder(
            x_dim=config.x_dim,
            hidden=[config.enc_h1_dim, config.enc_h2_dim],
            out_dim=config.z1_dim,
            dropout=config.dropout_rate,
            aggregator=config.aggregator,
        )
        self.latent_head = LatentHead(
            config.z1_dim,
            hidden_dim=config.z2_dim,
            z_dim=config.z_dim,
            logvar_init=config.logvar_init,
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
        first: Tensor | None = None,
    ) -> Tensor:
        """Targets x (B, N, X) (or (1, N, X) shared), z (B, Z) or (S, B, Z) -> scores."""
        return self.decoder(
            x=x,
            first=self.decoder.item_part(x) if first is None else first,
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
            posterior = self.latent(
                torch.cat([context_x, target_x], dim=1),
                torch.cat([context_labels, target_labels], dim=1),
                torch.cat([context_mask, target_mask], dim=1),
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
