"""The features-only baseline (SPEC section 4, key `features_lr`): logistic regression on exactly
the decoder's inputs apart from z and FiLM: the target's fixed item features and its neighbour
affinity to the support set, fitted on train users' episodes as the trainer draws them (each
user's fold tables), its L2 strength chosen on validation users. What it scores well, the task
path did not add."""

from __future__ import annotations

import numpy as np
import torch

from tanp.model import Gaussian, TaNP, TaskState
from training.baselines import BaselineSpec, Setting
from training.batches import Profiles, features_baseline_draws
from training.config import TrainConfig
from training.episodes import EpisodeSet, Prepared
from training.item_stats import TableTensors

L2_GRID = (1e-4, 1e-3, 1e-2, 1e-1)


def target_inputs(model: TaNP, state: TaskState, targets: torch.Tensor | None) -> torch.Tensor:
    """(B, W, F + 3) decoder inputs of targets (B, W) (all items when None) without z."""
    affinity = model.target_affinity(state, targets)
    if targets is None:
        features = model.item_features.unsqueeze(0).expand(state.task.shape[0], -1, -1)
    else:
        features = model.item_features[targets]
    if affinity is None:
        return features
    return torch.cat([features, affinity * model.config.affinity_scale], dim=-1)


def affinity_only_state(items: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor) -> TaskState:
    """A TaskState holding only a support set (all the affinity reads; no z, no task)."""
    empty = torch.zeros(items.shape[0], 0)
    return TaskState(Gaussian(empty, empty), empty, empty, items, labels, mask)


def training_rows(
    model: TaNP,
    profiles: Profiles,
    *,
    fold_tensors: list[TableTensors],
    train: TrainConfig,
    threshold: float,
    seed: int,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(rows, F + 3) inputs and (rows,) 0/1 targets from one draw of every training episode."""
    draws = features_baseline_draws(
        profiles,
        folds=len(fold_tensors),
        train=train,
        num_items=model.config.num_items,
        threshold=threshold,
        seed=seed,
    )
    inputs, targets = [], []
    with torch.no_grad():
        for fold, batch in draws:
            fold_tensors[fold].install(model)
            state = affinity_only_state(
                batch.support_items, batch.support_labels, batch.support_mask
            )
            values = target_inputs(model, state, batch.target_items)
            keep = batch.target_mask | batch.candidates
            inputs.append(values[keep])
            targets.append(batch.positive[keep].float())
    return torch.cat(inputs), torch.cat(targets)


def fit_logistic(inputs: torch.Tensor, targets: torch.Tensor, *, l2: float) -> torch.Tensor:
    """Weights (F + 1,) (bias last) of an L2-regularised logistic regression, L-BFGS, on
    standardised inputs folded back into the weights."""
    mean, std = inputs.mean(0), inputs.std(0).clamp_min(1e-6)
    scaled = (inputs - mean) / std
    weights = torch.zeros(inputs.shape[1] + 1, requires_grad=True)
    optimizer = torch.optim.LBFGS([weights], max_iter=200, line_search_fn="strong_wolfe")

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        logits = scaled @ weights[:-1] + weights[-1]
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, targets)
        loss = loss + l2 * (weights[:-1] ** 2).sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        slope = weights[:-1] / std
        return torch.cat([slope, (weights[-1] - (mean * slope).sum()).reshape(1)])


def logreg_scores(model: TaNP, episodes: EpisodeSet, weights: torch.Tensor) -> np.ndarray:
    """(E, items) logistic-regression scores with the model's current (full) item tables."""
    rows = []
    with torch.no_grad():
        for start in range(0, len(episodes), 64):
            stop = min(start + 64, len(episodes))
            width = int(episodes.support_len[start:stop].max())
            items = torch.from_numpy(episodes.support_items[start:stop, :width])
            labels = torch.from_numpy(episodes.support_labels[start:stop, :width])
            mask = (
                torch.arange(width)[None, :]
                < torch.from_numpy(episodes.support_len[start:stop])[:, None]
            )
            values = target_inputs(model, affinity_only_state(items, labels, mask), None)
            rows.append((values @ weights[:-1] + weights[-1]).numpy())
    return np.concatenate(rows) if rows else np.zeros((0, model.config.num_items))


def features_logreg_spec(
    prepared: Prepared,
    model: TaNP,
    *,
    profiles: Profiles,
    fold_tensors: list[TableTensors],
    full_tensors: TableTensors,
    train: TrainConfig,
) -> BaselineSpec:
    """The baseline to tune (training.baselines.Baselines.tune): its rows drawn from train
    users (fold tables), one fit per L2 strength when first asked for, scored with the full
    tables (installed here)."""
    inputs, targets = training_rows(
        model,
        profiles,
        fold_tensors=fold_tensors,
        train=train,
        threshold=prepared.interactions.positive_threshold,
        seed=train.seed + 11,
    )
    full_tensors.install(model)
    fitted: dict[float, torch.Tensor] = {}

    def scorer(episodes: EpisodeSet, setting: Setting) -> np.ndarray:
        l2 = setting["l2"]
        if l2 not in fitted:
            fitted[l2] = fit_logistic(inputs, targets, l2=l2)
        return logreg_scores(model, episodes, fitted[l2])

    # metrics.json keeps the baseline's key of SPEC section 4
    return BaselineSpec("features_lr", tuple({"l2": l2} for l2 in L2_GRID), scorer)
