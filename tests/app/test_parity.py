"""Offline/online parity on the real Last.fm episodes: the service's scores and top-k for a
test user's support set equal `tanp.scoring` run offline on the same support set.

No training: a seeded random TaNP over the 3,846-item catalog is enough, because parity is
about the two paths sharing one computation, not about model quality.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from pathlib import Path

import numpy as np
import pytest
import torch
from app_helpers import AppFactory

from tanp.checkpoint import save_checkpoint
from tanp.model import TaNP, TaNPConfig
from tanp.scoring import Scorer, rank

pytestmark = pytest.mark.integration

DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared/data/lastfm"
SPLIT_FILE = DATA_DIR / "tanp_split.tsv"
NUM_ITEMS = 3846
USERS = 10
K = 20


def first_test_supports(count: int) -> list[list[tuple[str, float]]]:
    supports: dict[int, list[tuple[str, float]]] = defaultdict(list)
    with SPLIT_FILE.open(newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if row["split"] == "test" and row["role"] == "support":
                supports[int(row["episode"])].append((row["item"], float(row["label"])))
    return [supports[episode] for episode in sorted(supports)[:count]]


@pytest.mark.skipif(not SPLIT_FILE.is_file(), reason=f"Last.fm split not found at {SPLIT_FILE}")
def test_service_matches_offline_scoring(make_client: AppFactory, tmp_path: Path) -> None:
    torch.manual_seed(7)
    model = TaNP(TaNPConfig(num_items=NUM_ITEMS))
    model.item_popularity.copy_(torch.rand(NUM_ITEMS) * 100)
    items = [str(index) for index in range(NUM_ITEMS)]
    save_checkpoint(tmp_path / "parity", model=model, items=items, version="parity")
    client = make_client(models_dir=tmp_path, max_support=200)
    scorer = Scorer(model)
    episodes = first_test_supports(USERS)
    assert len(episodes) == USERS
    for support in episodes:
        body = {"support": [{"item_id": item, "rating": label} for item, label in support], "k": K}
        response = client.post("/v1/recommend", json=body)
        assert response.status_code == 200, response.text
        indices = [int(item) for item, _ in support]
        state = scorer.encode_one(indices, [label for _, label in support])
        scores = scorer.scores(state)[0].numpy()
        expected = rank(scores, k=K, exclude=np.array(indices))
        returned = response.json()["items"]
        assert [item["item_id"] for item in returned] == [str(index) for index in expected]
        np.testing.assert_allclose(
            [item["score"] for item in returned], scores[expected], rtol=0, atol=1e-6
        )
