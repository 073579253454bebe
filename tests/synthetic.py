"""Tiny synthetic interaction data with real structure: users like the items of their group."""

from __future__ import annotations

from pathlib import Path

import numpy as np

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "lastfm"


def write_interactions_csv(
    path: Path,
    *,
    users: int = 60,
    items: int = 80,
    groups: int = 4,
    per_user: int = 16,
    seed: int = 0,
) -> Path:
    """`user,item,rating` CSV: each user likes `per_user` items of its group and dislikes as
    many from other groups, so a support set tells which group a user belongs to."""
    rng = np.random.default_rng(seed)
    group_of_item = np.arange(items) % groups
    lines = ["user,item,rating"]
    for user in range(users):
        group = user % groups
        own = np.flatnonzero(group_of_item == group)
        other = np.flatnonzero(group_of_item != group)
        liked = rng.choice(own, size=min(per_user, own.size), replace=False)
        disliked = rng.choice(other, size=liked.size, replace=False)
        lines += [f"u{user},i{item},1" for item in liked]
        lines += [f"u{user},i{item},0" for item in disliked]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path
