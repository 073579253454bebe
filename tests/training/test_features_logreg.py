"""The features-only baseline: its logistic regression recovers a known model."""

from __future__ import annotations

import torch

from training.features_logreg import fit_logistic


def test_fit_logistic_recovers_a_known_model() -> None:
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(20000, 2, generator=generator) * torch.tensor([1.0, 10.0])
    logits = 2.0 * inputs[:, 0] - 0.3 * inputs[:, 1] + 0.5
    targets = (torch.rand(20000, generator=generator) < torch.sigmoid(logits)).float()
    weights = fit_logistic(inputs, targets, l2=0.0)
    torch.testing.assert_close(weights, torch.tensor([2.0, -0.3, 0.5]), atol=0.15, rtol=0.1)
