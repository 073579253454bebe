"""Helpers for the registry, admin and reload tests: saved versions and a migrated DB."""

from __future__ import annotations

from pathlib import Path

from app_helpers import ITEMS, NAMES, tiny_model

from app.db import make_engine, make_session_factory, run_migrations
from app.registry import SessionFactory
from tanp.checkpoint import save_checkpoint


def save_version(root: Path, name: str, *, seed: int = 0) -> Path:
    """`tiny_model(seed)` saved as run directory `name` under `root`."""
    save_checkpoint(
        root / name,
        model=tiny_model(seed),
        items=ITEMS,
        item_names=NAMES,
        version=name,
        metrics={"catalog": {"Recall@20": 0.5 + seed / 100}},
    )
    return root / name


def migrated_sqlite(path: Path) -> tuple[str, SessionFactory]:
    url = f"sqlite:///{path}"
    run_migrations(url)
    return url, make_session_factory(make_engine(url))
