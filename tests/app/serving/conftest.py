"""Fixtures of the serving tests: the tiny model loaded as a ServingModel (with and without
stored neighbours) and an in-process task-state cache."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from app_helpers import ITEMS, NAMES, NUM_ITEMS

from app.serving.cache import MemoryCache, TaskStateCache
from app.serving.model import ServingModel
from tanp.checkpoint import save_checkpoint
from tanp.model import TaNP, TaNPConfig


@pytest.fixture(scope="module")
def model(models_dir: Path) -> ServingModel:
    return ServingModel.load(models_dir / "v1", device="cpu")


@pytest.fixture
def cache() -> TaskStateCache:
    return TaskStateCache(MemoryCache(ttl_seconds=60))


NEIGHBOURS = 3


@pytest.fixture(scope="module")
def neighbour_model(tmp_path_factory: pytest.TempPathFactory) -> ServingModel:
    """The tiny model with stored neighbours: item i's are i+1, i+2, i+3 (mod 40)."""
    torch.manual_seed(1)
    with_neighbours = TaNP(TaNPConfig(num_items=NUM_ITEMS, neighbours=NEIGHBOURS))
    with_neighbours.item_popularity.copy_(torch.arange(NUM_ITEMS, 0, -1, dtype=torch.float32))
    index = (torch.arange(NUM_ITEMS).unsqueeze(1) + torch.arange(1, NEIGHBOURS + 1)) % NUM_ITEMS
    with_neighbours.affinity.set_neighbours(index, torch.full((NUM_ITEMS, NEIGHBOURS), 0.5))
    run = tmp_path_factory.mktemp("neighbour-models") / "nb1"
    save_checkpoint(run, model=with_neighbours, items=ITEMS, item_names=NAMES, version="nb1")
    return ServingModel.load(run, device="cpu")
