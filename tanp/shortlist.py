"""The shortlist head: a bilinear first pass over the whole catalog, distilled from the decoder.

score1(i) = u_x(z, t) . x_i + u_a(z, t) . affinity_i, with u = W [z, t, 1]: about X + 3
multiply-adds per item instead of the decoder's ~6k, so a big catalog's cold request decodes only
the first pass's top C items. Fitted after training (`fit_shortlist`) on training users' supports.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from tanp.affinity import FEATURES as AFFINITY_FEATURES
from tanp.config import TaNPConfig
from tanp.decoder import DECODE_POINTS

if TYPE_CHECKING:
    from tanp.model import TaNP

TEACHER_TOP = 64  # each episode's best items by the decoder, always among the distilled ones
SAMPLED_ITEMS = 448  # plus this many uniform catalog items per episode


class ShortlistHead(nn.Module):
    """W: (Z + T + 1) -> (X + 3); zero until fitted (every item then ties)."""

    def __init__(self, config: TaNPConfig) -> None:
        super().__init__()
        self.x_dim = config.x_dim
        self.weight = nn.Parameter(
            torch.zeros(
                config.z_dim + config.taskenc_final_dim + 1, config.x_dim + AFFINITY_FEATURES
            )
        )

    def user_side(self, z: Tensor, task: Tensor) -> Tensor:
        """z (B, Z), task (B, T) -> u (B, X + 3)."""
        ones = torch.ones(z.shape[0], 1, device=z.device, dtype=z.dtype)
        return torch.cat([z, task, ones], dim=1) @ self.weight

    def forward(self, user: Tensor, x: Tensor, affinity: Tensor | None) -> Tensor:
        """u (B, X + 3), items x (B, N, X) or (N, X), affinity (B, N, 3) or None -> (B, N)."""
        taste = user[:, : self.x_dim]
        scores = taste @ x.T if x.dim() == 2 else (x @ taste.unsqueeze(-1)).squeeze(-1)
        if affinity is not None:
            scores = scores + (affinity @ user[:, self.x_dim :, None]).squeeze(-1)
        return scores


Episode = tuple[Tensor, Tensor, Tensor, Callable[..., Tensor]]


def fit_shortlist(
    model: TaNP,
    episodes: Iterable[Episode],
    *,
    generator: torch.Generator,
    epochs: int = 30,
    batch: int = 64,
    lr: float = 1e-2,
) -> float:
    """Fit `model.shortlist` (a ShortlistHead) to the decoder's scores by listwise distillation:
    for each batch of support sets (items, labels, mask (B, L), teacher) the softmax of the
    decoder's scores over each set's TEACHER_TOP best items and SAMPLED_ITEMS uniform ones is
    the target of the head's. `teacher(state)` -> (B, N) full-catalog scores under the item
    tables installed when the batch is read (the caller may swap tables between batches).
    Returns the last epoch's mean loss."""
    head = model.shortlist
    if head is None:
        raise ValueError("this model has no shortlist head")
    num_items = int(model.config.num_items)
    users, items_x, affinities, targets = [], [], [], []
    with torch.no_grad():
        for support_items, support_labels, support_mask, teacher in episodes:
            state = model.encode(
                x=model.point_inputs(support_items),
                labels=support_labels,
                mask=support_mask,
                items=support_items,
            )
            step = max(1, DECODE_POINTS // num_items)  # small decodes stay in the CPU caches
            full = torch.cat(
                [
                    teacher(state.rows(slice(row, row + step)))
                    for row in range(0, len(state.task), step)
                ]
            )  # (B, N)
            top = full.topk(min(TEACHER_TOP, num_items), dim=1).indices
            drawn = torch.randint(0, num_items, (full.shape[0], SAMPLED_ITEMS), generator=generator)
            chosen = torch.cat([top, drawn], dim=1)
            users.append(torch.cat([state.prior.mu, state.task], dim=1))
            items_x.append(model.point_inputs(chosen))
            affinity = model.target_affinity(state, chosen)
            affinities.append(
                torch.zeros(*chosen.shape, AFFINITY_FEATURES) if affinity is None else affinity
            )
            targets.append(full.gather(1, chosen))
    user_all = torch.cat(users)
    x_all, affinity_all, target_all = torch.cat(items_x), torch.cat(affinities), torch.cat(targets)
    optimizer = torch.optim.Adam(head.parameters(), lr=lr)
    loss_value = float("nan")
    z_dim = int(model.config.z_dim)
    for _ in range(epochs):
        order = torch.randperm(len(user_all), generator=generator)
        total, steps = 0.0, 0
        for start in range(0, len(order), batch):
            rows = order[start : start + batch]
            user = head.user_side(user_all[rows, :z_dim], user_all[rows, z_dim:])
            student = head(user, x_all[rows], affinity_all[rows])
            loss = (
                -(F.softmax(target_all[rows], dim=1) * F.log_softmax(student, dim=1)).sum(1).mean()
            )
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total, steps = total + float(loss.detach()), steps + 1
        loss_value = total / max(steps, 1)
    return loss_value
