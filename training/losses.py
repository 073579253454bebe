"""TaNP training losses: pointwise (MSE or BCE on the labelled targets) + listwise (softmax of the
positives against every candidate target) + KL(q(z | targets) || q(z | context)) + lambda * the
clustering KL. The model stays pure; these functions read its typed output.
"""

from __future__ import annotations

from typing import NamedTuple

import torch
from torch import Tensor
from torch.nn import functional as F

from tanp.model import Gaussian, TaNPOutput
from training.config import ClusteringTarget, PointwiseLoss


class LossParts(NamedTuple):
    total: Tensor
    pointwise: Tensor
    listwise: Tensor
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


def pointwise_loss(
    prediction: Tensor, labels: Tensor, mask: Tensor, *, kind: PointwiseLoss
) -> Tensor:
    """Per task (B,): masked mean over the labelled targets of (prediction - label)^2 (`mse`,
    the reference's) or of the binary cross-entropy of sigmoid(prediction) against the label
    (`bce`; labels already scaled to [0, 1])."""
    weights = mask.to(prediction.dtype)
    if kind == "mse":
        losses = (prediction - labels) ** 2
    else:
        losses = F.binary_cross_entropy_with_logits(prediction, labels, reduction="none")
    return (losses * weights).sum(1) / weights.sum(1).clamp_min(1.0)


def listwise_loss(
    prediction: Tensor, *, positive: Tensor, candidates: Tensor, correction: Tensor | None = None
) -> Tensor:
    """Per task (B,): -mean over the positive targets of log softmax(prediction - correction)
    over the candidate targets (the multinomial likelihood of the positives, as Mult-VAE; the
    correction, log of a sampled item's expected draws, makes it a sampled softmax); 0 for a
    task without positives. positive, candidates (B, W) bool; positives must be candidates."""
    if correction is not None:
        prediction = prediction - correction
    logits = prediction.masked_fill(~candidates, float("-inf"))
    log_probability = torch.log_softmax(logits, dim=1).masked_fill(~positive, 0.0)
    return -log_probability.sum(1) / positive.sum(1).clamp_min(1)


def tanp_loss(
    output: TaNPOutput,
    *,
    target_labels: Tensor,
    target_mask: Tensor,
    positive: Tensor,
    candidates: Tensor,
    pointwise: PointwiseLoss,
    correction: Tensor | None = None,
    pointwise_weight: float,
    listwise_weight: float,
    kl_weight: float,
    clustering_weight: float,
    clustering_target: ClusteringTarget = "dec",
) -> LossParts:
    """Mean over tasks of (pointwise + listwise + KL) plus the weighted clustering loss.

    target_labels (B, W) scaled to [0, 1]; target_mask marks the labelled targets, positive the
    relevant ones, candidates every scored target that may be ranked (not padding, not a
    support item)."""
    if output.posterior is None:
        raise ValueError("the training loss needs q(z | target): call the model with target labels")
    zero = output.prediction.new_zeros(output.prediction.shape[0])
    point = (
        pointwise_loss(output.prediction, target_labels, target_mask, kind=pointwise)
        if pointwise_weight
        else zero
    )
    listing = (
        listwise_loss(
            output.prediction, positive=positive, candidates=candidates, correction=correction
        )
        if listwise_weight
        else zero
    )
    kl = gaussian_kl(output.posterior, output.prior)  # (B,)
    clustering = clustering_loss(output.assignment, target=clustering_target)
    per_task = pointwise_weight * point + listwise_weight * listing + kl_weight * kl
    total = per_task.mean() + clustering_weight * clustering
    return LossParts(total, point.mean(), listing.mean(), kl.mean(), clustering)
