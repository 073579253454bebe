"""Rankings of one `ServingModel` through `tanp.scoring`: the top k among candidates, over the
whole catalog (decoded as a batch on a GPU, one task at a time on CPU) or by popularity, and the
chosen items' score spread over draws of z. A NaN or infinite score is a `ModelFaultError`,
never a ranking. Knows nothing about requests, caches or HTTP.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import numpy as np
import torch

from app.errors import ModelFaultError
from app.serving.model import ServingModel
from tanp.model import TaskState
from tanp.scoring import rank, stack_states

Ranking = tuple[np.ndarray, np.ndarray]  # (chosen item indices, their scores), best first


def candidate_top(
    model: ServingModel,
    *,
    state: TaskState,
    candidates: np.ndarray,
    k: int,
    excluded: np.ndarray,
) -> Ranking | ModelFaultError:
    """The top `k` among `candidates` (item indices), less the `excluded` items."""
    if candidates.size == 0:
        return candidates, np.zeros(0, dtype=np.float32)
    candidate_tensor = torch.from_numpy(candidates).unsqueeze(0)  # (1, C)
    scores = model.scorer.scores(state, candidates=candidate_tensor)[0].cpu().numpy()  # (C,)
    if not np.isfinite(scores).all():
        return non_finite(model)
    dropped = np.flatnonzero(np.isin(candidates, excluded))
    positions = rank(scores, k=k, exclude=dropped)
    return candidates[positions], scores[positions]


def shortlist_top(
    model: ServingModel, *, state: TaskState, count: int, k: int, excluded: np.ndarray
) -> Ranking | ModelFaultError:
    """The top `k` of the decoder over the shortlist head's `count` best items (less the
    `excluded`): a big catalog's cold request on CPU."""
    items, scores = model.scorer.shortlist_scores(
        state, count=count, exclude=torch.from_numpy(excluded)
    )
    values = scores.cpu().numpy()
    if not np.isfinite(values).all():
        return non_finite(model)
    positions = rank(values, k=k)
    return items.cpu().numpy()[positions], values[positions]


def whole_catalog_tops(
    model: ServingModel,
    *,
    states: Sequence[TaskState],
    ks: Sequence[int],
    excluded: Sequence[np.ndarray],
) -> Iterator[Ranking | ModelFaultError]:
    """Each state's top k over every catalog item less its excluded items, in order, each
    yielded as soon as its decode finished."""
    scorer = model.scorer
    # On CPU one task at a time: a (B, N, H) decode costs more per task than B decodes of one
    # (one task's activations fit in L2, a batch's do not); on a GPU the batch is the point.
    step = max(len(states), 1) if scorer.device.type == "cuda" else 1
    for first in range(0, len(states), step):
        chunk = range(first, min(first + step, len(states)))
        all_scores = scorer.scores(stack_states([states[i] for i in chunk])).cpu().numpy()  # (B, N)
        for row, index in enumerate(chunk):
            scores = all_scores[row]
            if not np.isfinite(scores).all():
                yield non_finite(model)
                continue
            chosen = rank(scores, k=ks[index], exclude=excluded[index])
            yield chosen, scores[chosen]


def popularity_top(
    model: ServingModel, *, excluded: np.ndarray, candidates: np.ndarray | None, k: int
) -> np.ndarray:
    """The `k` most popular items (among `candidates` when given), less the `excluded`."""
    if candidates is None:
        order = model.popularity_order
        return order[~np.isin(order, excluded)][:k]
    dropped = np.flatnonzero(np.isin(candidates, excluded))
    positions = rank(model.popularity[candidates], k=k, exclude=dropped)
    return candidates[positions]


def score_spread(
    model: ServingModel, *, state: TaskState, chosen: np.ndarray, samples: int, digest: str
) -> list[float]:
    """Std over `samples` draws of z of each chosen item's score, seeded by the support set's
    digest so answers repeat."""
    scorer = model.scorer
    generator = torch.Generator(device=scorer.device)
    generator.manual_seed(int(digest[:15], 16))
    sampled = scorer.sampled_scores(
        state,
        samples=samples,
        candidates=torch.from_numpy(chosen).unsqueeze(0),
        generator=generator,
    )  # (S, 1, k)
    spread = sampled[:, 0, :].std(dim=0, correction=0)
    if not bool(torch.isfinite(spread).all()):
        raise non_finite(model)
    return spread.cpu().tolist()


def non_finite(model: ServingModel) -> ModelFaultError:
    return ModelFaultError(version=model.version, reason="non-finite scores", kind="non_finite")
