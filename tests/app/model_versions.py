"""Helpers for the registry, admin and reload tests: saved versions and a migrated DB."""

from __future__ import annotations

import os
from pathlib import Path

from app_helpers import ITEMS, NAMES, tiny_model

from app.storage.db import SessionFactory, make_engine, make_session_factory, run_migrations
from tanp.checkpoint import save_checkpoint

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
