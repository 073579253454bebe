"""Turns full-catalog score matrices into the three metric blocks of SPEC section 4.

TaNP scores come from `tanp.scoring.Scorer` (the service's path); baselines hand in their own
matrices. Query labels are read only here, after scoring.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch

from tanp.decoder import DECODE_POINTS
from tanp.model import Gaussian, TaNP, TaskState
from tanp.scoring import Scorer, rank
from training.episodes import EpisodeSet
from training.metrics import catalog_metrics, mean_metrics, paper_metrics, standard_metrics

Blocks = dict[str, dict[str, float]]


TaskEdit = Literal["mean_task", "shuffled_task"]


def support_state(
    scorer: Scorer,
    episodes: EpisodeSet,
    rows: slice = slice(None),
    edit: TaskEdit | None = None,
) -> TaskState:
    """The TaskState of the support sets of episodes `rows` (an adaptation ablation applied
    when `edit` is given)."""
    lengths = torch.from_numpy(episodes.support_len[rows])
    width = int(lengths.max()) if len(lengths) else 0
    items = torch.from_numpy(episodes.support_items[rows, :width])
    labels = torch.from_numpy(episodes.support_labels[rows, :width])
    mask = torch.arange(width)[None, :] < lengths[:, None]
    state = scorer.encode(items=items, labels=labels, mask=mask)
    return state if edit is None else edited_task(state, edit)


def edited_task(state: TaskState, edit: TaskEdit) -> TaskState:
    """The adaptation ablations of SPEC section 4: every user's z (q(z | support)) and task
    state (task vector, cluster assignment) replaced by the mean over the users (`mean_task`)
    or by the next user's (`shuffled_task`, a cyclic shift). The support itself, and so the
    neighbour affinity, is left as it is."""
    tensors = (state.prior.mu, state.prior.logvar, state.task, state.assignment)
    if edit == "mean_task":
        edited = [tensor.mean(0, keepdim=True).expand_as(tensor) for tensor in tensors]
    else:
        edited = [tensor.roll(1, dims=0) for tensor in tensors]
    mu, logvar, task, assignment = edited
    return state._replace(prior=Gaussian(mu, logvar), task=task, assignment=assignment)


def _score(
    scorer: Scorer, state: TaskState, *, candidates: torch.Tensor | None, samples: int, seed: int
) -> np.ndarray:
    if samples > 0:
        generator = torch.Generator(device=scorer.device).manual_seed(seed)
        drawn = scorer.sampled_scores(
            state, samples=samples, candidates=candidates, generator=generator
        )
        return drawn.mean(0).float().cpu().numpy()
    return scorer.scores(state, candidates=candidates).float().cpu().numpy()


def tanp_scores(
    model: TaNP,
    episodes: EpisodeSet,
    *,
    samples: int = 0,
    seed: int = 0,
    edit: TaskEdit | None = None,
    batch: int | None = None,
) -> np.ndarray:
    """(E, items) scores from the support sets alone; z = posterior mean, or the mean score
    over `samples` draws of z when samples > 0; `edit` applies an adaptation ablation.
    Episodes are decoded `batch` at a time (default: as many as keep the (batch, items, hidden)
    activations about DECODE_POINTS points, so they stay in the CPU's caches)."""
    scorer = Scorer(model)
    state = support_state(scorer, episodes, edit=edit)
    if batch is None:
        batch = max(1, DECODE_POINTS // model.config.num_items)
    parts = []
    for start in range(0, len(episodes), batch):
        rows = slice(start, start + batch)
        parts.append(
            _score(scorer, state.rows(rows), candidates=None, samples=samples, seed=seed + start)
        )
    return np.concatenate(parts) if parts else np.zeros((0, model.config.num_items), np.float32)


def query_scores(
    model: TaNP, episodes: EpisodeSet, *, samples: int = 0, seed: int = 0
) -> np.ndarray:
    """(E, Q) scores of each episode's (padded) query items only; equal to the matching
    columns of `tanp_scores`, at a fraction of the cost."""
    scorer = Scorer(model)
    width = int(episodes.query_len.max()) if len(episodes) else 0
    candidates = torch.from_numpy(episodes.query_items[:, :width])
    return _score(
        scorer, support_state(scorer, episodes), candidates=candidates, samples=samples, seed=seed
    )


def evaluate_scores(episodes: EpisodeSet, scores: np.ndarray, *, threshold: float) -> Blocks:
    """Per-user means of the paper, standard and catalog metrics for one score matrix."""
    paper_rows, standard_rows, catalog_rows = [], [], []
    for episode in range(len(episodes)):
        query_items, query_labels = episodes.query(episode)
        support_items, _ = episodes.support(episode)
        within = scores[episode, query_items]
        relevant = query_labels >= threshold
        paper_rows.append(paper_metrics(rank(within).tolist(), query_labels.tolist()))
        standard_rows.append(standard_metrics(within, relevant))
        if relevant.any():
            ranked = rank(scores[episode], k=20, exclude=support_items)
            catalog_rows.append(catalog_metrics(ranked, set(query_items[relevant].tolist())))
    return {
        "paper": mean_metrics(paper_rows),  # type: ignore[arg-type]
        "standard": mean_metrics(standard_rows),
        "catalog": mean_metrics(catalog_rows),  # type: ignore[arg-type]
    }
