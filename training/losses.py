"""TaNP training losses: masked MSE + KL(q(z|target) || q(z|context)) + lambda * clustering KL.

The model stays pure; these functions read its typed output.
"""

from __future__ import annotations

from typing import Literal, NamedTuple

import torch
from torch import Tensor

from tanp.model import Gaussian, TaNPOutput

ClusteringTarget = Literal["dec", "reference"]


class LossParts(NamedTuple):
    total: Tensor
    mse: Tensor
    kl: Tensor
    clustering: Tensor


def gaussian_kl(posterior: Gaussian, prior: Gaussian) -> Tensor:
    """KL(N(mu_q, e^lv_q) || N(mu_p, e^lv_p)) per task, summed over z: (B,).

    0.5 * sum(e^lv_q / e^lv_p + (mu_q - mu_p)^2 / e^lv_p - 1 + lv_p - lv_q), as the
    reference's `new_kl_div` (its log_sigma is a log-variance).
    """
    variance_ratio = torch.exp(posterior.logvar - prior.logvar)
    mean_term = (posterior.mu - prior.mu) ** 2 / torch.exp(prior.logvar)
    return 0.5 * (variance_ratio + mean_term - 1.0 + prior.logvar - posterior.logvar).sum(-1)


def dec_target(assignment: Tensor) -> Tensor:
    """DEC target p_ik = (q_ik^2 / f_k) / sum_k' (q_ik'^2 / f_k'), f_k = sum_i q_ik over the
    batch, normalised over clusters k; (B, K) -> (B, K), treated as a constant."""
    weighted = assignment**2 / assignment.sum(dim=0, keepdim=True)
    return (weighted / weighted.sum(dim=1, keepdim=True)).detach()


def clustering_loss(assignment: Tensor, *, target: ClusteringTarget) -> Tensor:
    """KL(P || C) averaged over the batch.

    `reference` reproduces the released code's shape bug: its target is all ones, so the
    loss reduces to -sum_k log C_k / B (minimised by uniform C); kept only for the ablation.
    """
    log_assignment = torch.log(assignment.clamp_min(1e-12))
    if target == "reference":
        wanted = torch.ones_like(assignment)
        return (-(wanted * log_assignment)).sum() / assignment.shape[0]
    wanted = dec_target(assignment)
    return (
        wanted * (torch.log(wanted.clamp_min(1e-12)) - log_assignment)
    ).sum() / assignment.shape[0]


def tanp_loss(
    output: TaNPOutput,
    *,
    target_labels: Tensor,
    target_mask: Tensor,
    clustering_weight: float,
    clustering_target: ClusteringTarget = "dec",
    kl_weight: float = 1.0,
) -> LossParts:
    """Mean over tasks of (masked MSE + KL) plus the weighted clustering loss."""
    if output.posterior is None:
        raise ValueError("the training loss needs q(z | target): call the model with target labels")
    weights = target_mask.to(output.prediction.dtype)
    squared = (output.prediction - target_labels) ** 2 * weights
    mse = squared.sum(1) / weights.sum(1).clamp_min(1.0)  # (B,)
    kl = gaussian_kl(output.posterior, output.prior)  # (B,)
    clustering = clustering_loss(output.assignment, target=clustering_target)
    total = (mse + kl_weight * kl).mean() + clustering_weight * clustering
    return LossParts(total, mse.mean(), kl.mean(), clustering)
