"""What a rating says: the one rule for "liked", read by the model, the scorer and training alike.

A rating is liked when it reaches `liked_threshold` of its scale; the neighbour affinity weighs
support points by `liked_share`, which on a 0/1 scale is that rule itself.
"""

from __future__ import annotations

from torch import Tensor


def liked_threshold(label_min: float, label_max: float) -> float:
    """Ratings at or above this are liked: 1 on a 0/1 scale, three quarters up any other scale
    (4 on 1-5)."""
    if (label_min, label_max) == (0.0, 1.0):
        return 1.0
    return label_min + 0.75 * (label_max - label_min)


def liked_share(labels: Tensor, *, label_min: float, label_max: float) -> Tensor:
    """How liked each rating is, in [0, 1]: its place on [label_min, label_max] (a 4 on 1-5 is
    3/4 liked); 0 or 1 on a 0/1 scale, where it equals the liked rule."""
    span = max(label_max - label_min, 1e-8)
    return ((labels - label_min) / span).clamp(0, 1)
