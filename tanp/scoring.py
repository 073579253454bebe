"""The one inference path: support set -> task state -> scores -> ranking.

Offline evaluation and the service both call `Scorer`, so offline metrics and online answers
come from the same code. The item side (embeddings and the decoder's first-layer item part)
is computed once per model. Also the cache's byte format for a task state (never pickle).
Knows nothing about HTTP, databases or files.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor

from tanp.model import Gaussian, TaNP, TaskState, reparameterise, target_affinity

MAX_UNCERTAINTY_SAMPLES = 32
_STATE_MAGIC = b"TNPS"
# magic, version, z dim, task dim, clusters, affinity rows, items
_STATE_HEADER = struct.Struct("<4sHIIIII")
_STATE_VERSION = 2


class Scorer:
    """A model in eval mode plus its precomputed item side, on one device."""

    def __init__(self, model: TaNP) -> None:
        self.model = model.eval()
        self.config = model.config
        self.device = next(model.parameters()).device
        with torch.inference_mode():
            all_items = torch.arange(self.config.num_items, device=self.device).unsqueeze(0)
            self.item_x = model.point_inputs(all_items)[0]  # (N, X)
            self.item_first = model.decoder.first_layer_item_part(self.item_x)  # (N, H1)

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

    def _decode(self, state: TaskState, z: Tensor, candidates: Tensor | None) -> Tensor:
        if candidates is None:
            first = self.item_first.unsqueeze(0)  # (1, N, H1), broadcast over tasks
        else:
            candidates = candidates.to(self.device)
            first = self.item_first[candidates]  # (B, C, H1)
        affinity = target_affinity(state, candidates)
        return self.model.decoder.forward_from_first(first, z=z, task=state.task, affinity=affinity)


def rank(
    scores: np.ndarray, *, k: int | None = None, exclude: np.ndarray | Sequence[int] | None = None
) -> np.ndarray:
    """Indices of `scores` (N,) from best to worst; ties keep the lower index first.

    Excluded indices never appear; k cuts the list. Used offline and online alike.
    """
    values = np.asarray(scores, dtype=np.float64).copy()
    keep = np.ones(values.shape[0], dtype=bool)
    if exclude is not None and len(exclude):
        keep[np.asarray(exclude, dtype=np.int64)] = False
    order = np.argsort(-values, kind="stable")
    order = order[keep[order]]
    return order if k is None else order[:k]


def popularity_ranking(model: TaNP) -> np.ndarray:
    """Item indices by positive count among train users, most popular first (the fallback)."""
    popularity = model.item_popularity.detach().to("cpu", torch.float64).numpy()
    return rank(popularity)


def pack_state(state: TaskState) -> bytes:
    """One task's state (B = 1) -> header + raw little-endian float32 bytes."""
    tensors = (state.prior.mu, state.prior.logvar, state.task, state.assignment, state.affinity)
    mu, logvar, task, assignment, affinity = (
        tensor.detach().to("cpu", torch.float32).reshape(-1) for tensor in tensors
    )
    rows, items = state.affinity.shape[1], state.affinity.shape[2]
    header = _STATE_HEADER.pack(
        _STATE_MAGIC, _STATE_VERSION, mu.numel(), task.numel(), assignment.numel(), rows, items
    )
    body = torch.cat([mu, logvar, task, assignment, affinity]).numpy().astype("<f4").tobytes()
    return header + body


def unpack_state(payload: bytes, *, device: torch.device | str = "cpu") -> TaskState:
    """Inverse of `pack_state`; raises ValueError on any malformed payload."""
    if len(payload) < _STATE_HEADER.size:
        raise ValueError("task state payload too short")
    magic, version, z_dim, task_dim, clusters, rows, items = _STATE_HEADER.unpack_from(payload)
    if magic != _STATE_MAGIC or version != _STATE_VERSION:
        raise ValueError("task state payload has an unknown header")
    expected = _STATE_HEADER.size + 4 * (2 * z_dim + task_dim + clusters + rows * items)
    if len(payload) != expected:
        raise ValueError(f"task state payload has {len(payload)} bytes, expected {expected}")
    values = torch.from_numpy(
        np.frombuffer(payload, dtype="<f4", offset=_STATE_HEADER.size).astype(np.float32)
    ).to(device)
    mu, logvar, task, assignment, affinity = torch.split(
        values, [z_dim, z_dim, task_dim, clusters, rows * items]
    )
    return TaskState(
        Gaussian(mu.unsqueeze(0), logvar.unsqueeze(0)),
        task.unsqueeze(0),
        assignment.unsqueeze(0),
        affinity.reshape(1, rows, items),
    )
