"""Per-epoch validation: each validation user's NDCG@5 and catalog Recall@20 (the selection
metrics); over a big catalog only each user's query items and candidate stage are ranked.
"""

from __future__ import annotations

import numpy as np
import torch

from tanp.model import TaNP
from tanp.scoring import Scorer
from training.compare import per_user_headline
from training.episodes import EpisodeSet
from training.evaluate import TaskEdit, edited_task, support_state, tanp_scores

FULL_VALIDATION_ITEMS = 8192  # above this, validation ranks the candidate stage's items only
VALIDATION_CANDIDATES = 2000


def validation_headline(
    model: TaNP,
    episodes: EpisodeSet,
    *,
    threshold: float,
    samples: int = 0,
    edit: TaskEdit | None = None,
) -> dict[str, np.ndarray]:
    """Per-user validation NDCG@5 and catalog Recall@20 (the selection metrics). Over a big
    catalog each epoch ranks only each user's query items and candidate-stage items (what the
    service does above its full-scoring limit); the test users are always ranked over all.
    `edit`: an adaptation ablation (the selection's task-gain check)."""
    if model.config.num_items <= FULL_VALIDATION_ITEMS:
        scores = tanp_scores(model, episodes, samples=samples, edit=edit)
    else:
        scores = candidate_scores(model, episodes, count=VALIDATION_CANDIDATES, edit=edit)
    return per_user_headline(episodes, scores, threshold=threshold)


def candidate_scores(
    model: TaNP, episodes: EpisodeSet, *, count: int, edit: TaskEdit | None = None
) -> np.ndarray:
    """(E, items): -inf except each episode's query items and its candidate stage."""
    scorer = Scorer(model)
    scores = np.full((len(episodes), model.config.num_items), -np.inf, dtype=np.float32)
    whole = support_state(scorer, episodes)
    # the candidates come from each user's own support; an ablation edits what is scored
    edited = whole if edit is None else edited_task(whole, edit)
    for start in range(0, len(episodes), 64):
        rows = slice(start, min(start + 64, len(episodes)))
        state = whole.rows(rows)
        chosen = []
        for offset, episode in enumerate(range(rows.start, rows.stop)):
            one = state.rows(slice(offset, offset + 1))
            candidates = scorer.candidates(one, count=count)[0].cpu()
            query = torch.from_numpy(episodes.query(episode)[0])
            chosen.append(torch.cat([candidates, query]).unique())
        width = max(len(items) for items in chosen)
        padded = torch.stack(
            [torch.cat([items, items[:1].expand(width - len(items))]) for items in chosen]
        )
        values = scorer.scores(edited.rows(rows), candidates=padded).float().cpu().numpy()
        for offset, items in enumerate(chosen):
            scores[rows.start + offset, items.numpy()] = values[offset, : len(items)]
    return scores
