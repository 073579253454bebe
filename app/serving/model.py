"""The serving model and the one atomically swapped reference to it. `ServingModel.load` builds,
once per load, everything the service reads from a verified run directory (scorer, ids and their
index, names, URLs, popularity and its ranking, search keys); `ModelHolder.current` is read once
per request, so requests in flight finish on their model while a new one is swapped in.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from tanp.checkpoint import build_model
from tanp.model import TaNPConfig
from tanp.scoring import Scorer, StateShape, popularity_ranking, state_shape


@dataclass(frozen=True, eq=False)
class ServingModel:
    """One loaded model version and every lookup the service needs, computed at load."""

    version: str  # the run directory's name under MODELS_DIR: registry, answers
    # the weights' identity (checked against the file by build_model): cache and memo keys,
    # answers, and what workers compare (a retrain may reuse a version's name)
    weights_sha256: str
    run_dir: Path
    manifest: dict[str, Any]
    scorer: Scorer
    state_shape: StateShape  # what a cached task state must look like to be used
    config: TaNPConfig
    device: str
    items: list[str]  # external item ids, in model index order
    index_of: dict[str, int]
    names: list[str | None]
    urls: list[str | None]
    popularity: np.ndarray  # (N,) float64, positive counts among train users
    top_popularity: float  # the largest count, 1.0 when every count is 0
    popularity_order: np.ndarray  # (N,) item indices, most popular first
    search_names: list[str]  # casefolded names ("" when unnamed)
    search_ids: list[str]  # casefolded item ids

    @classmethod
    def load(cls, run_dir: Path, *, device: str) -> ServingModel:
        """Verify and load `run_dir` (raises CheckpointError), then build the lookups."""
        loaded = build_model(run_dir, device)
        model = loaded.model
        items = loaded.items
        names: list[str | None] = (
            [name or None for name in loaded.item_names]
            if loaded.item_names is not None
            else [None] * len(items)
        )
        urls: list[str | None] = (
            [url or None for url in loaded.item_urls]
            if loaded.item_urls is not None
            else [None] * len(items)
        )
        popularity = model.item_popularity.detach().to("cpu", torch.float64).numpy()
        top = float(popularity.max()) if popularity.size else 0.0
        return cls(
            version=run_dir.name,
            weights_sha256=str(loaded.manifest["weights_sha256"]),
            run_dir=run_dir,
            manifest=loaded.manifest,
            scorer=loaded.scorer,
            state_shape=state_shape(loaded.scorer),
            config=model.config,
            device=str(loaded.device),
            items=items,
            index_of={item: index for index, item in enumerate(items)},
            names=names,
            urls=urls,
            popularity=popularity,
            top_popularity=top or 1.0,
            popularity_order=popularity_ranking(model),
            search_names=[(name or "").casefold() for name in names],
            search_ids=[item.casefold() for item in items],
        )

    def search(self, query: str, *, limit: int) -> list[int]:
        """Item indices whose name contains `query` (casefolded), then those whose id does,
        most popular first; an empty query lists the most popular items."""
        needle = query.strip().casefold()
        if not needle:
            return [int(index) for index in self.popularity_order[:limit]]
        name_hits: list[int] = []
        id_hits: list[int] = []
        for index in self.popularity_order.tolist():
            if needle in self.search_names[index]:
                name_hits.append(index)
            elif needle in self.search_ids[index]:
                id_hits.append(index)
            if len(name_hits) >= limit:
                break
        return (name_hits + id_hits)[:limit]


class ModelHolder:
    """The reference to the ServingModel this worker answers with; None until one is loaded."""

    def __init__(self) -> None:
        self._current: ServingModel | None = None

    @property
    def current(self) -> ServingModel | None:
        return self._current

    def swap(self, serving: ServingModel) -> ServingModel | None:
        """Serve `serving` from now on; returns the model it replaced."""
        previous, self._current = self._current, serving
        return previous

    def clear(self) -> None:
        """Stop serving (tests): readiness turns false."""
        self._current = None
