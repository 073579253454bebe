"""The one inference path: support set -> task state -> scores -> ranking.

Offline evaluation and the service both call `Scorer`, so offline metrics and online answers come
from the same code; the item side is computed once per model. Also the cache's byte format of a
task state (never pickle). Knows nothing about HTTP, databases or files.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F

from tanp.labels import liked_threshold
from tanp.model import Gaussian, TaNP, TaskState, reparameterise

MAX_UNCERTAINTY_SAMPLES = 32
BECAUSE_LIMIT = 2  # liked support items named per recommendation ("because you liked X and Y")
_STATE_MAGIC = b"TNPS"
# magic, version, z dim, task dim, clusters, support size
_STATE_HEADER = struct.Struct("<4sHIIII")
_STATE_VERSION = 3


class Scorer:
    """A model in eval mode plus its precomputed item side, on one device."""

    def __init__(self, model: TaNP) -> None:
        self.model = model.eval()
        self.config = model.config
        self.device = next(model.parameters()).device
        with torch.inference_mode():
            all_items = torch.arange(self.config.num_items, device=self.device).unsqueeze(0)
            self.item_x = model.point_inputs(all_items)[0]  # (N, X)
            self.item_part = model.decoder.item_part(self.item_x)  # (N, H1)
            popularity = model.item_popularity.to(torch.float64)
            self.popular = torch.argsort(-popularity, stable=True)  # (N,) most popular first

    @torch.inference_mode()
    def encode(self, *, items: Tensor, labels: Tensor, mask: Tensor | None = None) -> TaskState:
        """Support items (B, L) long, labels (B, L), mask (B, L) -> TaskState of B tasks."""
        items = items.to(self.device)
        labels = labels.to(self.device, torch.float32)
        if mask is None:
            mask = torch.ones_like(items, dtype=torch.bool)
        return self.model.encode(
            x=self.item_x[items], labels=labels, mask=mask.to(self.device), items=items
        )

    def encode_one(self, item_indices: list[int], labels: list[float]) -> TaskState:
        """One support set (possibly empty) -> TaskState with B = 1."""
        items = torch.tensor([item_indices], dtype=torch.long).reshape(1, len(item_indices))
        values = torch.tensor([labels], dtype=torch.float32).reshape(1, len(labels))
        return self.encode(items=items, labels=values)

    def encode_many(self, supports: Sequence[tuple[list[int], list[float]]]) -> TaskState:
        """Several support sets (item indices, labels) -> one TaskState of B tasks, padded to
        the longest with the mask; each task's state equals `encode_one`'s to float rounding."""
        longest = max((len(items) for items, _ in supports), default=0)
        items = torch.zeros(len(supports), longest, dtype=torch.long)
        labels = torch.zeros(len(supports), longest, dtype=torch.float32)
        mask = torch.zeros(len(supports), longest, dtype=torch.bool)
        for row, (indices, values) in enumerate(supports):
            items[row, : len(indices)] = torch.tensor(indices, dtype=torch.long)
            labels[row, : len(values)] = torch.tensor(values, dtype=torch.float32)
            mask[row, : len(indices)] = True
        return self.encode(items=items, labels=labels, mask=mask)

    @torch.inference_mode()
    def scores(self, state: TaskState, *, candidates: Tensor | None = None) -> Tensor:
        """Deterministic scores with z = mean of q(z | support): (B, N) or (B, C) for candidates."""
        return self._decode(state, state.prior.mu, candidates)

    @torch.inference_mode()
    def sampled_scores(
        self,
        state: TaskState,
        *,
        samples: int,
        candidates: Tensor | None = None,
        generator: torch.Generator | None = None,
    ) -> Tensor:
        """Scores for `samples` draws of z ~ q(z | support): (S, B, N) or (S, B, C)."""
        if not 1 <= samples <= MAX_UNCERTAINTY_SAMPLES:
            raise ValueError(f"samples must be within 1..{MAX_UNCERTAINTY_SAMPLES}")
        expanded = Gaussian(
            state.prior.mu.expand(samples, *state.prior.mu.shape),
            state.prior.logvar.expand(samples, *state.prior.logvar.shape),
        )
        return self._decode(state, reparameterise(expanded, generator), candidates)

    def can_shortlist(self, count: int) -> bool:
        """Whether `shortlist_scores(count=count)` scores fewer items than the whole catalog."""
        return self.model.shortlist is not None and 0 < count < self.config.num_items

    @torch.inference_mode()
    def first_pass(
        self, state: TaskState, *, exclude: Tensor | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """One task (B = 1): the shortlist head's score of every catalog item (N,), -inf for
        `exclude` (and for NaN), and the catalog's neighbour affinity (1, N, 3) it used (None
        without neighbours). Needs a shortlist head (`can_shortlist`)."""
        head = self.model.shortlist
        if head is None:
            raise ValueError("this model has no shortlist head")
        affinity = self.model.target_affinity(state, None)
        first = head(head.user_side(state.prior.mu, state.task), self.item_x, affinity)[0]
        if exclude is not None and exclude.numel():
            first[exclude.to(self.device)] = -torch.inf
        # NaN first-pass scores sort last; the decoder's scores are checked by the caller
        return first.nan_to_num(nan=-torch.inf), affinity

    @torch.inference_mode()
    def decode_shortlist(self, state: TaskState, items: Tensor, affinity: Tensor | None) -> Tensor:
        """The decoder's scores (C,) of one task's shortlisted `items` (C,), given the catalog
        affinity `first_pass` returned."""
        return self.model.decode(
            x=self.item_x[items].unsqueeze(0),
            item_part=self.item_part[items].unsqueeze(0),
            z=state.prior.mu,
            state=state,
            affinity=None if affinity is None else affinity[:, items],
        )[0]

    def shortlist_scores(
        self, state: TaskState, *, count: int, exclude: Tensor | None = None
    ) -> tuple[Tensor, Tensor]:
        """One task (B = 1): the first pass's `count` best items over the whole catalog (less
        `exclude`), then the decoder's scores of those: (items (C,), scores (C,))."""
        first, affinity = self.first_pass(state, exclude=exclude)
        chosen = first.topk(min(count, first.shape[0])).indices  # (C,)
        return chosen, self.decode_shortlist(state, chosen, affinity)

    @torch.inference_mode()
    def candidates(self, state: TaskState, *, count: int) -> Tensor:
        """The candidate stage for big catalogs, one task (B = 1): up to `count` items (1, C),
        the liked support items' stored neighbours with the largest summed similarity first,
        then the most popular items, support items left out. TaNP then scores only these."""
        mask = state.support_mask[0]
        support = state.support_items[0][mask]
        threshold = liked_threshold(self.config.label_min, self.config.label_max)
        liked = support[state.support_labels[0][mask] >= threshold]
        affinity = self.model.affinity
        neighbours = affinity.neighbour_index[liked].reshape(-1)
        weights = affinity.neighbour_weight[liked].reshape(-1)
        neighbours, weights = neighbours[weights > 0], weights[weights > 0]
        unique, inverse = torch.unique(neighbours, return_inverse=True)
        summed = torch.zeros(unique.shape, device=self.device).index_add_(0, inverse, weights)
        by_affinity = unique[torch.argsort(-summed, stable=True)]
        popular = self.popular[: count + support.numel()]
        merged = torch.cat([by_affinity[: count - count // 4], popular])
        # the first occurrence of each item, in order, without the support
        ordered = merged.cpu().numpy()
        _, first = np.unique(ordered, return_index=True)
        ordered = ordered[np.sort(first)]
        ordered = ordered[~np.isin(ordered, support.cpu().numpy())][:count]
        return torch.from_numpy(ordered).unsqueeze(0).to(self.device)

    @torch.inference_mode()
    def because(
        self, state: TaskState, *, targets: np.ndarray | Sequence[int], limit: int = BECAUSE_LIMIT
    ) -> list[list[int]]:
        """For each target item of one task (B = 1), the liked support items (indices) that add
        most to its score through the neighbour affinity, at most `limit`, strongest first;
        empty where none does or the model has no neighbour path (`strongest_liked`)."""
        target_tensor = torch.as_tensor(np.asarray(targets, dtype=np.int64), device=self.device)
        if not self.config.neighbours:
            return [[] for _ in range(target_tensor.numel())]
        mask = state.support_mask[0]
        return self.model.affinity.strongest_liked(
            items=state.support_items[0][mask],
            labels=state.support_labels[0][mask],
            targets=target_tensor,
            limit=limit,
        )

    def _decode(self, state: TaskState, z: Tensor, candidates: Tensor | None) -> Tensor:
        if candidates is None:
            x, item_part = self.item_x.unsqueeze(0), self.item_part.unsqueeze(0)  # (1, N, .)
        else:
            candidates = candidates.to(self.device)
            x, item_part = self.item_x[candidates], self.item_part[candidates]  # (B, C, .)
        affinity = self.model.target_affinity(state, candidates)
        return self.model.decode(x=x, item_part=item_part, z=z, state=state, affinity=affinity)


def rank(
    scores: np.ndarray, *, k: int | None = None, exclude: np.ndarray | Sequence[int] | None = None
) -> np.ndarray:
    """Indices of `scores` (N,) from best to worst; ties keep the lower index first.

    Excluded indices never appear; k cuts the list. Used offline and online alike. With k
    well below N only the items scoring at least the k-th best kept score are sorted
    (`np.partition` finds that score), so a top-10 of a big catalog costs O(N), not O(N log N);
    the answer is the full sort's, ties at the cut included.
    """
    values = np.asarray(scores, dtype=np.float64)
    count = values.shape[0]
    keep = np.ones(count, dtype=bool)
    if exclude is not None and len(exclude):
        keep[np.asarray(exclude, dtype=np.int64)] = False
    if k is not None and 0 < k < count // 4 and not np.isnan(values).any():
        kept = np.flatnonzero(keep)
        if k >= kept.size:
            chosen = kept
        else:
            negated = -values[kept]
            cut = np.partition(negated, k - 1)[k - 1]  # minus the k-th best kept score
            chosen = kept[negated <= cut]
        order = chosen[np.argsort(-values[chosen], kind="stable")]
        return order[:k]
    order = np.argsort(-values, kind="stable")
    order = order[keep[order]]
    return order if k is None else order[:k]


def split_states(state: TaskState) -> list[TaskState]:
    """A TaskState of B tasks -> B states of one task each (`TaskState.rows`)."""
    return [state.rows(slice(row, row + 1)) for row in range(state.task.shape[0])]


def stack_states(states: Sequence[TaskState]) -> TaskState:
    """States of one task each -> one TaskState of B tasks, supports padded with the mask."""
    if len(states) == 1:
        return states[0]
    longest = max(state.support_items.shape[1] for state in states)

    def padded(tensor: Tensor) -> Tensor:
        return F.pad(tensor, (0, longest - tensor.shape[1]))

    return TaskState(
        Gaussian(
            torch.cat([state.prior.mu for state in states]),
            torch.cat([state.prior.logvar for state in states]),
        ),
        torch.cat([state.task for state in states]),
        torch.cat([state.assignment for state in states]),
        torch.cat([padded(state.support_items) for state in states]),
        torch.cat([padded(state.support_labels) for state in states]),
        torch.cat([padded(state.support_mask) for state in states]),
    )


def popularity_ranking(model: TaNP) -> np.ndarray:
    """Item indices by positive count among train users, most popular first (the fallback)."""
    popularity = model.item_popularity.detach().to("cpu", torch.float64).numpy()
    return rank(popularity)


def pack_state(state: TaskState) -> bytes:
    """One task's state (B = 1) -> header + raw little-endian bytes: z's mean and log-variance,
    the task vector and cluster assignment (float32), then the support's item indices (int32)
    and labels (float32). Its size depends on the support, not on the catalog."""
    keep = state.support_mask[0].to("cpu")
    items = state.support_items[0].to("cpu")[keep].to(torch.int32)
    labels = state.support_labels[0].to("cpu", torch.float32)[keep]
    floats = [
        tensor.detach().to("cpu", torch.float32).reshape(-1)
        for tensor in (state.prior.mu, state.prior.logvar, state.task, state.assignment)
    ]
    header = _STATE_HEADER.pack(
        _STATE_MAGIC,
        _STATE_VERSION,
        floats[0].numel(),
        floats[2].numel(),
        floats[3].numel(),
        items.numel(),
    )
    body = torch.cat([*floats]).numpy().astype("<f4").tobytes()
    body += items.numpy().astype("<i4").tobytes() + labels.numpy().astype("<f4").tobytes()
    return header + body


@dataclass(frozen=True, slots=True)
class StateShape:
    """What a task state of one model holds: z, task vector and cluster widths, the catalog
    size its support indices must fall in, and the label range of its support labels."""

    z_dim: int
    task_dim: int
    clusters: int
    num_items: int
    label_min: float
    label_max: float


def state_shape(scorer: Scorer) -> StateShape:
    """The shape of `scorer`'s task states, read from one encoded support set (so it follows
    the model, not a copy of its arithmetic)."""
    config = scorer.config
    probe = scorer.encode_one([0], [config.label_max])
    return StateShape(
        z_dim=int(probe.prior.mu.shape[-1]),
        task_dim=int(probe.task.shape[-1]),
        clusters=int(probe.assignment.shape[-1]),
        num_items=config.num_items,
        label_min=config.label_min,
        label_max=config.label_max,
    )


def unpack_state(
    payload: bytes, *, device: torch.device | str = "cpu", shape: StateShape | None = None
) -> TaskState:
    """Inverse of `pack_state`; raises ValueError on any malformed payload, and, given the
    model's `shape`, on a state that does not fit it (other widths, non-finite values,
    support indices outside the catalog, labels outside the label range)."""
    if len(payload) < _STATE_HEADER.size:
        raise ValueError("task state payload too short")
    magic, version, z_dim, task_dim, clusters, support = _STATE_HEADER.unpack_from(payload)
    if magic != _STATE_MAGIC or version != _STATE_VERSION:
        raise ValueError("task state payload has an unknown header")
    floats = 2 * z_dim + task_dim + clusters
    expected = _STATE_HEADER.size + 4 * (floats + 2 * support)
    if len(payload) != expected:
        raise ValueError(f"task state payload has {len(payload)} bytes, expected {expected}")
    offset = _STATE_HEADER.size
    values = np.frombuffer(payload, dtype="<f4", count=floats, offset=offset).astype(np.float32)
    offset += 4 * floats
    items = np.frombuffer(payload, dtype="<i4", count=support, offset=offset).astype(np.int64)
    offset += 4 * support
    labels = np.frombuffer(payload, dtype="<f4", count=support, offset=offset).astype(np.float32)
    if shape is not None:
        _check_fits(
            shape, widths=(z_dim, task_dim, clusters), values=values, items=items, labels=labels
        )
    mu, logvar, task, assignment = torch.split(
        torch.from_numpy(values).to(device), [z_dim, z_dim, task_dim, clusters]
    )
    item_tensor = torch.from_numpy(items).to(device).unsqueeze(0)
    return TaskState(
        Gaussian(mu.unsqueeze(0), logvar.unsqueeze(0)),
        task.unsqueeze(0),
        assignment.unsqueeze(0),
        item_tensor,
        torch.from_numpy(labels).to(device).unsqueeze(0),
        torch.ones_like(item_tensor, dtype=torch.bool),
    )


def _check_fits(
    shape: StateShape,
    *,
    widths: tuple[int, int, int],
    values: np.ndarray,
    items: np.ndarray,
    labels: np.ndarray,
) -> None:
    expected = (shape.z_dim, shape.task_dim, shape.clusters)
    if widths != expected:
        raise ValueError(f"task state widths (z, task, clusters) {widths}, model has {expected}")
    if not np.isfinite(values).all() or not np.isfinite(labels).all():
        raise ValueError("task state holds non-finite values")
    if items.size and (items.min() < 0 or items.max() >= shape.num_items):
        raise ValueError(f"task state support indices outside [0, {shape.num_items})")
    if labels.size and (labels.min() < shape.label_min or labels.max() > shape.label_max):
        raise ValueError("task state support labels outside the model's label range")
