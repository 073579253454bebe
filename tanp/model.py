"""TaNP (Task-adaptive Neural Process, Lin et al., WWW 2021) as one batched torch module.

Role-named parts: item/user embedding, latent encoder h_theta (-> z), task encoder, memory unit
(global pool of cluster centres), FiLM / Gating-FiLM / plain decoder. Episodes arrive padded:
every tensor has a batch axis B and a point axis N with a boolean mask. The model is pure: no
losses, no optimiser. Knows nothing about files, data formats or the service.
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

DecoderKind = Literal["film", "gating_film", "none"]
UserInput = Literal["none", "unknown"]
AFFINITY_FEATURES = 3
PAIR_SIMILARITY_MAX_ITEMS = 8192  # a dense (items, items) float32 matrix of at most 256 MiB
Aggregator = Literal["mean", "attention"]


@dataclass(frozen=True)
class TaNPConfig:
    """Architecture of one TaNP; stored verbatim in every checkpoint manifest.

    Defaults are the reference notebook's hyper-parameters (the `reference` preset).
    `user_input="none"` drops the user id (every user is new at serving time);
    `"unknown"` keeps a user table whose last row is a shared unknown-user embedding.
    `film_gamma_offset` = 1 centres FiLM's scale at identity (gamma = 1 + tanh(W t)); the
    reference's 0 scales every hidden unit by ~tanh(0) at initialisation, which is why its
    predictions stay nearly constant for most of training.
    `neighbours` = K > 0 stores each item's K most similar items (cosine over train users'
    positives) and feeds the decoder three support-conditioned features per target item: its mean
    similarity to the liked and to the disliked support items and its largest similarity to a
    liked one (item-kNN as a decoder input).
    `item_prior_dim` > 0 feeds fixed item-side features (computed from train users only and
    stored as the `item_prior` buffer) into the decoder beside the item embedding.
    """

    num_items: int
    num_users: int = 0
    user_input: UserInput = "none"
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
    item_prior_dim: int = 0
    film_gamma_offset: float = 0.0
    embedding_init_std: float = 0.0
    logvar_init: float = 0.0
    neighbours: int = 0
    affinity_scale: float = 1.0
    item_id_input: bool = True
    label_min: float = 0.0
    label_max: float = 1.0

    def __post_init__(self) -> None:
        if self.num_items < 1:
            raise ValueError("num_items must be positive")
        if self.user_input == "unknown" and self.num_users < 1:
            raise ValueError("user_input='unknown' needs num_users >= 1")
        if self.decoder not in ("film", "gating_film", "none"):
            raise ValueError(f"unknown decoder {self.decoder!r}")
        if self.aggregator not in ("mean", "attention"):
            raise ValueError(f"unknown aggregator {self.aggregator!r}")

    @property
    def x_dim(self) -> int:
        """Width of one point's input x: item embedding (+ user embedding) (+ item prior)."""
        user = self.second_embedding_dim if self.user_input == "unknown" else 0
        item = self.second_embedding_dim if self.item_id_input else 0
        return item + user + self.item_prior_dim

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

    prior: q(z | context), each (B, Z); task: modulation input after the memory unit (B, T);
    assignment: soft cluster assignment C (B, K); affinity: (B, 3, N) neighbour similarity
    features of every item (see TaNP.support_affinity; (B, 0, N) when unused), or (B, 3, W) of
    the W targets named to TaNP.encode.
    """

    prior: Gaussian
    task: Tensor
    assignment: Tensor
    affinity: Tensor


class TaNPOutput(NamedTuple):
    """One result type for every mode.

    prediction: (B, Nt) scores of the targets; prior: q(z | context); posterior: q(z | target)
    when target labels were given, else None; assignment: (B, K) cluster assignment.
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
    """Three hidden layers over [x, z], each modulated by the task embedding, then one output.

    film: h = h * tanh(W_g t) + tanh(W_b t); gating_film mixes gamma/beta with a sigmoid gate
    and a third transform as in the reference's Gating_Decoder; none: no modulation.
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

    def first_layer_item_part(self, x: Tensor) -> Tensor:
        """The item side of the first layer, W_x x + b: (..., X) -> (..., H1). Precomputable."""
        return self.input_x(x)

    def forward_from_first(
        self, first: Tensor, *, z: Tensor, task: Tensor, affinity: Tensor | None = None
    ) -> Tensor:
        """first (B, N, H1) item part, z (B, Z) or (S, B, Z), task (B, T), affinity
        (B, N, 3) target features when neighbours are used.

        Returns scores (B, N), or (S, B, N) for S draws of z."""
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
        return self.output(hidden).squeeze(-1)

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

    Buffers `item_popularity` (positive counts among train users, for the popularity fallback)
    and `item_prior` (fixed decoder features) travel with the weights.
    """

    item_popularity: Tensor
    item_prior: Tensor
    neighbour_index: Tensor
    neighbour_weight: Tensor
    pair_similarity: Tensor | None

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
        self.register_buffer("item_popularity", torch.zeros(config.num_items))
        self.register_buffer("item_prior", torch.zeros(config.num_items, config.item_prior_dim))
        self.register_buffer(
            "neighbour_index", torch.zeros(config.num_items, config.neighbours, dtype=torch.long)
        )
        self.register_buffer("neighbour_weight", torch.zeros(config.num_items, config.neighbours))
        # a training-only cache, never saved (see build_pair_similarity)
        self.register_buffer("pair_similarity", None, persistent=False)

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
        if self.config.item_prior_dim:
            parts.append(self.item_prior[items])
        return torch.cat(parts, dim=-1)

    def encode(
        self,
        *,
        x: Tensor,
        labels: Tensor,
        mask: Tensor,
        items: Tensor,
        own_positives: Tensor | None = None,
        latent_pairs: Tensor | None = None,
        targets: Tensor | None = None,
    ) -> TaskState:
        """Context points x (B, L, X), labels (B, L), mask (B, L), items (B, L) -> TaskState.

        latent_pairs: the latent path's per-point encodings when already computed.
        targets (B, W): when given, the affinity covers only these items, (B, 3, W) in their
        order, instead of the whole catalog."""
        if latent_pairs is None:
            latent_pairs = self.latent_encoder.encode_pairs(x, labels)
        prior = self.latent_head(self.latent_encoder.aggregate(latent_pairs, mask))
        # points after the last context column of every episode never reach the task encoder
        used = trailing_trim(mask)
        assignment, task = self.memory(
            self.task_encoder(x[:, :used], labels[:, :used], mask[:, :used])
        )
        if targets is not None and self.pair_similarity is not None and own_positives is None:
            affinity = self.pair_affinity(items=items, labels=labels, mask=mask, targets=targets)
        else:
            affinity = self.support_affinity(
                items=items, labels=labels, mask=mask, own_positives=own_positives
            )
            if targets is not None:
                affinity = affinity_of(affinity, targets)
        return TaskState(prior, task, assignment, affinity)

    def build_pair_similarity(self, max_items: int = PAIR_SIMILARITY_MAX_ITEMS) -> None:
        """Spread the neighbour lists into a dense (items, items) matrix, S[i, j] = the weight
        of j in i's list (0 when absent), so training reads the affinity of its few target
        items with one gather instead of scattering every neighbour over the whole catalog.
        Skipped for catalogs over max_items (the matrix takes items^2 * 4 bytes); not saved."""
        items = self.config.num_items
        if not self.config.neighbours or items > max_items:
            self.pair_similarity = None
            return
        dense = torch.zeros(items, items, device=self.neighbour_weight.device)
        self.pair_similarity = dense.scatter_(1, self.neighbour_index, self.neighbour_weight)

    def pair_affinity(
        self, *, items: Tensor, labels: Tensor, mask: Tensor, targets: Tensor
    ) -> Tensor:
        """support_affinity restricted to targets (B, W): (B, 3, W), through the dense matrix
        of build_pair_similarity."""
        assert self.pair_similarity is not None
        weights, counts = self._support_weights(labels, mask)
        similarity = self.pair_similarity[items.unsqueeze(-1), targets.unsqueeze(1)]  # (B, L, W)
        sums = weights @ similarity  # (B, 2, W)
        closest = (weights[:, :1].transpose(1, 2) * similarity).amax(1, keepdim=True)
        return torch.cat([sums / counts, closest.clamp_min(0.0)], dim=1)

    def _support_weights(self, labels: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        """Each context point's liked / disliked weight (B, 2, L) and their sums (B, 2, 1)."""
        span = max(self.config.label_max - self.config.label_min, 1e-8)
        liked = ((labels - self.config.label_min) / span).clamp(0, 1) * mask
        weights = torch.stack([liked, (1 - liked) * mask], dim=1)
        return weights, weights.sum(-1, keepdim=True).clamp_min(1.0)

    def support_affinity(
        self, *, items: Tensor, labels: Tensor, mask: Tensor, own_positives: Tensor | None = None
    ) -> Tensor:
        """(B, 3, N): mean similarity of every item to the liked and to the disliked context
        items, and its largest similarity to a liked one, through each context item's stored
        neighbour list; (B, 0, N) when unused.

        own_positives (B, N) bool, for users whose positives built the similarities (training
        users): their own co-occurrences and counts are taken out, sim' = (sim sqrt(n_i n_j) -
        o_i o_j) / sqrt((n_i - o_i)(n_j - o_j)) with o = 1 for the user's own positives, so
        training sees the similarities a new user will get."""
        batch = items.shape[0]
        if not self.config.neighbours:
            return torch.zeros(batch, 0, self.config.num_items, device=items.device)
        weights, counts = self._support_weights(labels, mask)  # (B, 2, L), (B, 2, 1)
        neighbour_items = self.neighbour_index[items]  # (B, L, K)
        similarity = self.neighbour_weight[items]  # (B, L, K)
        if own_positives is not None:
            similarity = self._without_own(
                items,
                neighbours=neighbour_items,
                similarity=similarity,
                own_positives=own_positives,
            )
        # (B, 2, L, K): each context item's neighbour weights, split into liked and disliked
        contributions = weights.unsqueeze(-1) * similarity.unsqueeze(1)
        affinity = torch.zeros(batch, 2, self.config.num_items, device=items.device)
        index = neighbour_items.reshape(batch, 1, -1).expand(-1, 2, -1)
        affinity.scatter_add_(2, index, contributions.reshape(batch, 2, -1))
        closest = torch.zeros(batch, self.config.num_items, device=items.device)
        closest.scatter_reduce_(
            1, index[:, 0], contributions[:, 0].reshape(batch, -1), reduce="amax"
        )
        return torch.cat([affinity / counts, closest.unsqueeze(1)], dim=1)

    def _without_own(
        self, items: Tensor, *, neighbours: Tensor, similarity: Tensor, own_positives: Tensor
    ) -> Tensor:
        own_j = torch.gather(own_positives, 1, items).unsqueeze(-1).float()  # (B, L, 1)
        own_i = (
            torch.gather(own_positives, 1, neighbours.reshape(items.shape[0], -1))
            .reshape(neighbours.shape)
            .float()
        )  # (B, L, K)
        count_j = self.item_popularity[items].unsqueeze(-1)
        count_i = self.item_popularity[neighbours]
        shared = (similarity * torch.sqrt(count_i * count_j) - own_i * own_j).clamp_min(0.0)
        rest = (count_i - own_i) * (count_j - own_j)
        return torch.where(rest > 0, shared / torch.sqrt(rest.clamp_min(1e-8)), 0.0)

    def decode(self, x: Tensor, *, z: Tensor, state: TaskState, items: Tensor | None) -> Tensor:
        """Targets x (B, N, X) with ids items (B, N), z (B, Z) -> scores (B, N); items None
        when the state's affinity is already aligned with the targets."""
        first = self.decoder.first_layer_item_part(x)
        return self.decoder.forward_from_first(
            first, z=z, task=state.task, affinity=target_affinity(state, items)
        )

    def latent(self, x: Tensor, labels: Tensor, mask: Tensor) -> Gaussian:
        """q(z | points): the latent path alone, used for the posterior over targets."""
        return self.latent_head(self.latent_encoder(x, labels, mask))

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
        own_positives: Tensor | None = None,
        sample: bool = False,
    ) -> TaNPOutput:
        """Score targets given a context; with target labels also return q(z | target).

        Training (the reference): sample=True with target labels draws z from q(z | target).
        Inference: sample=False uses the mean of q(z | context), so scores are deterministic.
        own_positives (B, N) bool marks training users' own positives (see support_affinity).
        """
        context_x = self.point_inputs(context_items, users)
        # training passes one point set for both (context and target are masks over it): each
        # point is then embedded and encoded once for the prior and the posterior
        shared = target_items is context_items and target_labels is context_labels
        target_x = context_x if shared else self.point_inputs(target_items, users)
        pairs = self.latent_encoder.encode_pairs(context_x, context_labels) if shared else None
        state = self.encode(
            x=context_x,
            labels=context_labels,
            mask=context_mask,
            items=context_items,
            own_positives=own_positives,
            latent_pairs=pairs,
            targets=target_items,
        )
        posterior = None
        if target_labels is not None:
            if target_mask is None:
                target_mask = torch.ones_like(target_labels, dtype=torch.bool)
            if pairs is not None:
                posterior = self.latent_head(self.latent_encoder.aggregate(pairs, target_mask))
            else:
                posterior = self.latent(target_x, target_labels, target_mask)
        source = posterior if posterior is not None else state.prior
        z = reparameterise(source) if sample else source.mu
        # the state's affinity already covers exactly the targets
        prediction = self.decode(target_x, z=z, state=state, items=None)
        return TaNPOutput(prediction, state.prior, posterior, state.assignment)


def trailing_trim(mask: Tensor) -> int:
    """Number of leading point columns that hold a masked-in point of some episode."""
    columns = mask.any(0).nonzero()
    return int(columns[-1]) + 1 if len(columns) else 0


def affinity_of(affinity: Tensor, items: Tensor) -> Tensor:
    """Catalog-wide affinity (B, F, N_catalog) -> the columns of items (B, N): (B, F, N)."""
    return torch.gather(affinity, 2, items.unsqueeze(1).expand(-1, affinity.shape[1], -1))


def target_affinity(state: TaskState, items: Tensor | None) -> Tensor | None:
    """The affinity features of the targets: (B, N, 3) for items (B, N), or for all the state
    holds (every catalog item, or the targets named to TaNP.encode) when items is None; None
    when the model has no neighbour path."""
    if state.affinity.shape[1] == 0:
        return None
    if items is None:
        return state.affinity.transpose(1, 2)
    return affinity_of(state.affinity, items).transpose(1, 2)


def reparameterise(gaussian: Gaussian, generator: torch.Generator | None = None) -> Tensor:
    """One draw z = mu + exp(logvar / 2) * eps, eps ~ N(0, I)."""
    std = torch.exp(0.5 * gaussian.logvar)
    noise = torch.randn(std.shape, generator=generator, device=std.device, dtype=std.dtype)
    return gaussian.mu + std * noise


PRESETS: dict[str, dict[str, Any]] = {
    # the reference notebook / train_TaNP.py defaults
    "reference": {},
    # the authors' train.sh dimensions
    "train_sh": {
        "first_embedding_dim": 32,
        "second_embedding_dim": 16,
        "enc_h1_dim": 32,
        "enc_h2_dim": 16,
        "taskenc_h1_dim": 32,
        "taskenc_h2_dim": 32,
        "taskenc_final_dim": 16,
        "clusters_k": 10,
        "dec_h1_dim": 32,
        "dec_h2_dim": 32,
        "dec_h3_dim": 16,
    },
}
