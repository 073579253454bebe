"""Helpers for the registry, admin and reload tests: saved versions and a migrated DB."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from app_helpers import ITEMS, NAMES, NUM_ITEMS, tiny_model

from app.storage.db import SessionFactory, make_engine, make_session_factory, run_migrations
from tanp.checkpoint import save_checkpoint
from tanp.model import TaNP, TaNPConfig

# A web page for every other item; "" where the dataset has none.
URLS = [
    f"https://www.last.fm/music/{index}" if index % 2 == 0 else "" for index in range(len(ITEMS))
]


def save_version(root: Path, name: str, *, seed: int = 0) -> Path:
    """`tiny_model(seed)` saved as run directory `name` under `root`."""
    save_checkpoint(
        root / name,
        model=tiny_model(seed),
        items=ITEMS,
        item_names=NAMES,
        item_urls=URLS,
        version=name,
        metrics={"catalog": {"Recall@20": 0.5 + seed / 100}},
    )
    return root / name


def two_versions(root: Path) -> Path:
    """Run directories v1 and v2 under `root`, v2 the newest; returns root."""
    save_version(root, "v1", seed=1)
    save_version(root, "v2", seed=2)
    past = os.stat(root / "v2" / "manifest.json").st_mtime - 100
    os.utime(root / "v1" / "manifest.json", (past, past))
    return root


def migrated_sqlite(path: Path) -> tuple[str, SessionFactory]:
    url = f"sqlite:///{path}"
    run_migrations(url)
    return url, make_session_factory(make_engine(url))


def save_poisoned_version(root: Path, name: str) -> None:
    """A model that loads (finite weights, probe fine) but whose answers turn non-finite when
    a5 is in the support: a5's four neighbours are all a6 at weight 3e38 (the kind of value one
    flipped exponent bit makes), and their sum overflows float32."""
    torch.manual_seed(0)
    model = TaNP(TaNPConfig(num_items=NUM_ITEMS, neighbours=4))
    model.item_popularity.copy_(torch.arange(NUM_ITEMS, 0, -1, dtype=torch.float32))
    index = torch.arange(NUM_ITEMS).repeat(4, 1).T.contiguous()
    weight = torch.full((NUM_ITEMS, 4), 0.1)
    index[5], weight[5] = 6, 3e38
    model.affinity.set_neighbours(index, weight)
    save_checkpoint(root / name, model=model, items=ITEMS, item_names=NAMES, version=name)
