"""Offline/online parity on the real Last.fm episodes with the default preset: the service's
scores and top-k for a test user's support set equal `tanp.scoring` run offline on the same
support set, to 1e-6, on the path the default model actually serves (neighbour affinity on).

The model is trained by the `tanp-train train` CLI with its default preset for one epoch: the
weights need not be good, only the ones (and the neighbour buffers) the product serves.
"""

from __future__ import annotations

import csv
import json
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from app_helpers import AppFactory, TestClient

from tanp.checkpoint import build_model
from tanp.scoring import Scorer, rank
from training.cli import main as tanp_train

pytestmark = pytest.mark.integration

DATA_DIR = Path(__file__).resolve().parents[2].parent / "shared/data/lastfm"
SPLIT_FILE = DATA_DIR / "tanp_split.tsv"
USERS = 10
K = 20
CANDIDATES = 50


@pytest.fixture(scope="module")
def default_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not SPLIT_FILE.is_file():
        pytest.skip(f"Last.fm split not found at {SPLIT_FILE}")
    models = tmp_path_factory.mktemp("parity-models")
    command = ["train", "--data", str(DATA_DIR), "--split", "tanp", "--epochs", "1", "--quiet"]
    assert tanp_train([*command, "--out", str(models / "default")]) == 0
    return models / "default"


def first_test_supports(count: int) -> list[list[tuple[str, float]]]:
    supports: dict[int, list[tuple[str, float]]] = defaultdict(list)
    with SPLIT_FILE.open(newline="") as handle:
        for row in csv.DictReader(handle, delimiter="\t"):
            if row["split"] == "test" and row["role"] == "support":
                supports[int(row["episode"])].append((row["item"], float(row["label"])))
    return [supports[episode] for episode in sorted(supports)[:count]]


def ask(client: TestClient, body: dict[str, Any]) -> dict[str, Any]:
    response = client.post("/v1/recommend", json=body)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


def test_service_matches_offline_scoring_on_the_default_preset(
    make_client: AppFactory, default_run: Path
) -> None:
    config = json.loads((default_run / "manifest.json").read_text())["model_config"]
    assert config["neighbours"] > 0, "the default preset no longer uses the neighbour affinity"
    loaded = build_model(default_run, "cpu")
    neighbour_weights = [
        buffer for name, buffer in loaded.model.named_buffers() if name.endswith("neighbour_weight")
    ]  # wherever the affinity module keeps them
    assert neighbour_weights and all(bool(buffer.any()) for buffer in neighbour_weights)
    scorer: Scorer = loaded.scorer
    index_of = {item: index for index, item in enumerate(loaded.items)}
    client = make_client(models_dir=default_run.parent, max_support=200)
    episodes = first_test_supports(USERS)
    assert len(episodes) == USERS
    generator = np.random.default_rng(0)
    for support in episodes:
        support_body = [{"item_id": item, "rating": label} for item, label in support]
        indices = [index_of[item] for item, _ in support]
        state = scorer.encode_one(indices, [label for _, label in support])
        scores = scorer.scores(state)[0].numpy()
        expected = rank(scores, k=K, exclude=np.array(indices))

        fresh = ask(client, {"support": support_body, "k": K})
        cached = ask(client, {"support": support_body[::-1], "k": K})
        assert (fresh["cached"], cached["cached"]) == (False, True)
        for answer in (fresh, cached):
            returned = answer["items"]
            assert [item["item_id"] for item in returned] == [loaded.items[i] for i in expected]
            np.testing.assert_allclose(
                [item["score"] for item in returned], scores[expected], rtol=0, atol=1e-6
            )

        # Ranking a candidate subset scores the same items the same way.
        candidates = generator.choice(len(loaded.items), size=CANDIDATES, replace=False)
        subset = scorer.scores(state, candidates=torch.from_numpy(candidates).unsqueeze(0))
        subset_scores = subset[0].numpy()
        excluded = np.flatnonzero(np.isin(candidates, indices))
        best = candidates[rank(subset_scores, k=K, exclude=excluded)]
        answer = ask(
            client,
            {
                "support": support_body,
                "k": K,
                "candidates": [loaded.items[int(index)] for index in candidates],
            },
        )
        assert [item["item_id"] for item in answer["items"]] == [loaded.items[i] for i in best]
        np.testing.assert_allclose(
            [item["score"] for item in answer["items"]], scores[best], rtol=0, atol=1e-6
        )
