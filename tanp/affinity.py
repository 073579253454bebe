"""NeighbourAffinity: item-kNN evidence of a support set as three decoder inputs per target.

Each item keeps its K most similar items (`neighbour_index` (N, K), rows sorted by item, with
`neighbour_weight`); `targets` binary-searches them, `catalog` scatters them over all N items, and
no (items, items) matrix exists (docs/training.md). Knows nothing about training or serving.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tanp.labels import liked_share

FEATURES = 3  # mean liked, max liked, mean disliked


def support_weights(
    labels: Tensor, mask: Tensor, *, label_min: float, label_max: float
) -> tuple[Tensor, Tensor]:
    """Each support point's liked / disliked weight (B, 2, L) and the weights' sums (B, 2, 1):
    its `liked_share` and the rest."""
    liked = liked_share(labels, label_min=label_min, label_max=label_max) * mask
    weights = torch.stack([liked, (1 - liked) * mask], dim=1)
    return weights, weights.sum(-1, keepdim=True).clamp_min(1.0)


def sorted_neighbours(index: Tensor, weight: Tensor) -> tuple[Tensor, Tensor]:
    """(N, K) neighbour lists with each row sorted by item index, as `targets` searches them
    (ties keep their order)."""
    order = index.argsort(dim=1, stable=True)
    return index.gather(1, order), weight.gather(1, order)


class NeighbourAffinity(nn.Module):
    """Support set (B, L) -> (B, W, 3) affinity features of target items."""

    neighbour_index: Tensor
    neighbour_weight: Tensor

    def __init__(
        self, *, num_items: int, neighbours: int, label_min: float, label_max: float
    ) -> None:
        super().__init__()
        self.num_items = num_items
        self.label_min = label_min
        self.label_max = label_max
        index = torch.arange(num_items).unsqueeze(1).expand(-1, neighbours).contiguous()
        self.register_buffer("neighbour_index", index)
        self.register_buffer("neighbour_weight", torch.zeros(num_items, neighbours))

    @property
    def neighbours(self) -> int:
        return int(self.neighbour_index.shape[1])

    def set_neighbours(self, index: Tensor, weight: Tensor) -> None:
        """Store (N, K) neighbour lists, each row sorted here (`sorted_neighbours`)."""
        index, weight = sorted_neighbours(index, weight)
        self.neighbour_index = index.to(self.neighbour_index.device)
        self.neighbour_weight = weight.to(self.neighbour_weight.device)

    def _weights(self, labels: Tensor, mask: Tensor) -> tuple[Tensor, Tensor]:
        return support_weights(labels, mask, label_min=self.label_min, label_max=self.label_max)

    def targets(self, *, items: Tensor, labels: Tensor, mask: Tensor, targets: Tensor) -> Tensor:
        """Support items/labels/mask (B, L), targets (B, W) -> (B, W, 3).

        sim(j, i) is j's stored weight for i when i is among j's neighbours, else 0."""
        batch, width = targets.shape
        if self.neighbours == 0 or items.shape[1] == 0:
            return torch.zeros(batch, width, FEATURES, device=targets.device)
        similarity = self._similarity(items, targets)  # (B, L, W)
        weights, counts = self._weights(labels, mask)
        means = (weights @ similarity) / counts  # (B, 2, W)
        closest = (weights[:, :1].transpose(1, 2) * similarity).amax(1)  # (B, W)
        return torch.stack([means[:, 0], closest.clamp_min(0.0), means[:, 1]], dim=-1)

    def similarity(self, *, sources: Tensor, targets: Tensor) -> Tensor:
        """sim(j, i) of source items j (L,) and target items i (W,): (L, W), j's stored weight
        for i when i is among j's neighbours, else 0 (the similarity `targets` averages)."""
        if self.neighbours == 0 or sources.numel() == 0:
            return torch.zeros(sources.numel(), targets.numel(), device=targets.device)
        return self._similarity(sources.unsqueeze(0), targets.unsqueeze(0))[0]

    def strongest_liked(
        self, *, items: Tensor, labels: Tensor, targets: Tensor, limit: int
    ) -> list[list[int]]:
        """For each target (W,), the support items (L,) that add most to its mean-liked
        affinity (`liked_share` x similarity, largest first, ties in support order), at most
        `limit` of them and only those adding more than 0: "because you liked X"."""
        liked = liked_share(
            labels.to(torch.float32), label_min=self.label_min, label_max=self.label_max
        )
        contribution = liked.unsqueeze(1) * self.similarity(sources=items, targets=targets)
        contribution = contribution.transpose(0, 1).cpu()  # (W, L)
        strongest: list[list[int]] = []
        for row in contribution:
            order = torch.argsort(-row, stable=True)[:limit]
            strongest.append([int(items[position]) for position in order if row[position] > 0])
        return strongest

    def _similarity(self, items: Tensor, targets: Tensor) -> Tensor:
        """Support items (B, L), targets (B, W) -> sim(j, i) (B, L, W)."""
        rows = self.neighbour_index[items]  # (B, L, K), sorted
        wanted = targets.unsqueeze(1).expand(-1, items.shape[1], -1).contiguous()  # (B, L, W)
        position = torch.searchsorted(rows, wanted).clamp_max(self.neighbours - 1)
        found = rows.gather(2, position) == wanted
        return self.neighbour_weight[items].gather(2, position) * found

    def catalog(self, *, items: Tensor, labels: Tensor, mask: Tensor) -> Tensor:
        """Support items/labels/mask (B, L) -> (B, N, 3) for every catalog item."""
        batch = items.shape[0]
        device = items.device
        if self.neighbours == 0 or items.shape[1] == 0:
            return torch.zeros(batch, self.num_items, FEATURES, device=device)
        weights, counts = self._weights(labels, mask)  # (B, 2, L), (B, 2, 1)
        neighbour_items = self.neighbour_index[items].reshape(batch, -1)  # (B, L K)
        # (B, 2, L, K): each support item's neighbour weights, split into liked and disliked
        contributions = weights.unsqueeze(-1) * self.neighbour_weight[items].unsqueeze(1)
        contributions = contributions.reshape(batch, 2, -1)
        sums = torch.zeros(batch, 2, self.num_items, device=device)
        sums.scatter_add_(2, neighbour_items.unsqueeze(1).expand(-1, 2, -1), contributions)
        closest = torch.zeros(batch, self.num_items, device=device)
        closest.scatter_reduce_(1, neighbour_items, contributions[:, 0], reduce="amax")
        means = sums / counts
        return torch.stack([means[:, 0], closest, means[:, 1]], dim=-1)
