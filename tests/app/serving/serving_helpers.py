"""What the serving tests share: a support set on the tiny model and a scorer that raises."""

from __future__ import annotations

from typing import Any

from tanp.scoring import Scorer

SUPPORT = [
    {"item_id": "a3", "rating": 1},
    {"item_id": "a7", "rating": 1},
    {"item_id": "a20", "rating": 0},
]


class RaisingScorer:
    """Stands in for a Scorer whose scoring raises (a corrupt index met at request time)."""

    def __init__(self, real: Scorer, error: Exception) -> None:
        self.device = real.device
        self._real = real
        self._error = error

    def encode_one(self, items: list[int], labels: list[float]) -> Any:
        return self._real.encode_one(items, labels)

    def encode_many(self, supports: Any) -> Any:
        return self._real.encode_many(supports)

    def scores(self, state: Any, *, candidates: Any = None) -> Any:
        raise self._error
