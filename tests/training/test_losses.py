"""Losses: the Gaussian KL, the DEC clustering target (and the reference's bug), the listwise
sampled softmax."""

from __future__ import annotations

import numpy as np
import torch

from tanp.model import Gaussian
from training.losses import clustering_loss, dec_target, gaussian_kl, listwise_loss


def test_gaussian_kl_zero_for_equal_and_positive_otherwise() -> None:
    prior = Gaussian(torch.zeros(2, 3), torch.zeros(2, 3))
    assert torch.allclose(gaussian_kl(prior, prior), torch.zeros(2))
    shifted = Gaussian(torch.ones(2, 3), torch.zeros(2, 3))
    torch.testing.assert_close(gaussian_kl(shifted, prior), torch.full((2,), 1.5))


def test_dec_target_sharpens_and_reference_target_is_all_ones() -> None:
    assignment = torch.tensor([[0.7, 0.2, 0.1], [0.1, 0.3, 0.6]])
    target = dec_target(assignment)
    torch.testing.assert_close(target.sum(1), torch.ones(2))
    assert target[0, 0] > assignment[0, 0] and target[1, 2] > assignment[1, 2]
    reference = clustering_loss(assignment, target="reference")
    torch.testing.assert_close(reference, -torch.log(assignment).sum() / 2)
    uniform = torch.full((2, 3), 1 / 3)
    assert clustering_loss(uniform, target="dec").abs() < 1e-6


def test_listwise_loss_is_the_positives_mean_negative_log_softmax() -> None:
    scores = torch.tensor([[2.0, 0.0, 1.0, 5.0]])
    positive = torch.tensor([[True, False, True, False]])
    candidates = torch.tensor([[True, True, True, False]])  # the 5.0 is a support item
    denominator = np.log(np.exp(2.0) + np.exp(0.0) + np.exp(1.0))
    expected = ((denominator - 2.0) + (denominator - 1.0)) / 2
    torch.testing.assert_close(
        listwise_loss(scores, positive=positive, candidates=candidates),
        torch.tensor([expected], dtype=torch.float32),
    )
    nothing = listwise_loss(scores, positive=torch.zeros_like(positive), candidates=candidates)
    assert nothing.item() == 0.0
