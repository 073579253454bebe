"""POST /v1/recommend and /recommend over HTTP: the answer's JSON (and its direct writer), the
request id, the cache and log wiring, and every 422/503 (the recommend path itself:
tests/app/serving/)."""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from app_helpers import ITEMS, NAMES, AppFactory, TestClient, state_of, tiny_model
from model_versions import save_poisoned_version

from app.api.routes.recommend import recommend_response_json
from app.schemas import RecommendedItem, RecommendResponse
from app.serving.pipeline import NamedItem, Recommendation, ScoredItem
from app.storage.crud import registered_versions
from app.storage.request_log import RequestLogEntry
from tanp.scoring import Scorer, rank

SUPPORT = [
    {"item_id": "a3", "rating": 1},
    {"item_id": "a7", "rating": 1},
    {"item_id": "a20", "rating": 0},
]


def post(client: TestClient, body: dict[str, Any], path: str = "/v1/recommend") -> Any:
    return client.post(path, json=body)


def returned_ids(response: Any) -> list[str]:
    return [item["item_id"] for item in response.json()["items"]]


def test_scores_and_ranking_equal_offline_scorer(client: TestClient) -> None:
    response = post(client, {"support": SUPPORT, "k": 10})
    assert response.status_code == 200
    body = response.json()
    scorer = Scorer(tiny_model())
    indices = [ITEMS.index(item["item_id"]) for item in SUPPORT]
    scores = scorer.scores(scorer.encode_one(indices, [1.0, 1.0, 0.0]))[0].numpy()
    expected = rank(scores, k=10, exclude=np.array(indices))
    assert returned_ids(response) == [ITEMS[index] for index in expected]
    got = [item["score"] for item in body["items"]]
    np.testing.assert_allclose(got, scores[expected], atol=1e-6)
    assert body["items"][0]["name"] == NAMES[int(expected[0])]
    assert body["model_version"] == "v1"
    assert body["fallback"] is None
    assert body["request_id"] == response.headers["X-Request-ID"]
    assert all(item["uncertainty"] is None for item in body["items"])


def test_alias_route_gives_the_same_answer(client: TestClient) -> None:
    first = post(client, {"support": SUPPORT, "k": 5})
    second = post(client, {"support": SUPPORT, "k": 5}, path="/recommend")
    assert second.status_code == 200
    assert second.json()["items"] == first.json()["items"]


def test_both_routes_are_in_openapi_with_examples(client: TestClient) -> None:
    paths = client.get("/openapi.json").json()["paths"]
    for path in ("/v1/recommend", "/recommend"):
        operation = paths[path]["post"]
        assert operation["requestBody"]["content"]["application/json"]["examples"]
        assert operation["responses"]["200"]["content"]["application/json"]["example"]


def test_fallback_and_uncertainty_reach_the_json(client: TestClient) -> None:
    fallback = post(client, {"support": [], "k": 2, "uncertainty_samples": 4}).json()
    assert fallback["fallback"] == "popularity"
    assert [item["uncertainty"] for item in fallback["items"]] == [None, None]
    assert [item["because"] for item in fallback["items"]] == [[], []]
    sampled = post(client, {"support": SUPPORT, "k": 3, "uncertainty_samples": 4}).json()
    assert sampled["fallback"] is None
    assert all(item["uncertainty"] > 0 for item in sampled["items"])


def test_memory_cache_hit_on_second_identical_request(client: TestClient) -> None:
    first = post(client, {"support": SUPPORT, "k": 10}).json()
    second = post(client, {"support": SUPPORT[::-1], "k": 10}).json()
    assert (first["cached"], second["cached"]) == (False, True)
    assert second["items"] == first["items"]
    metrics = client.get("/metrics").text
    assert "tanp_cache_hits_total 1.0" in metrics
    assert "tanp_cache_misses_total 1.0" in metrics


class RecordingLog:
    def __init__(self) -> None:
        self.entries: list[RequestLogEntry] = []

    def record(self, entry: RequestLogEntry) -> None:
        self.entries.append(entry)


def test_request_log_receives_one_entry_per_recommend(client: TestClient) -> None:
    sink = RecordingLog()
    state_of(client).recommender.request_log = sink
    first = post(client, {"support": SUPPORT, "k": 7})
    second = post(client, {"support": [], "k": 3}, path="/recommend")
    assert [(entry.request_id, entry.k) for entry in sink.entries] == [
        (first.headers["X-Request-ID"], 7),
        (second.headers["X-Request-ID"], 3),
    ]


@pytest.mark.parametrize(
    ("body", "named"),
    [
        ({"support": [{"item_id": "nope", "rating": 1}]}, ["support", "'nope'"]),
        ({"support": SUPPORT, "exclude": ["x1", "a1"]}, ["exclude", "'x1'"]),
        ({"support": SUPPORT, "candidates": ["a1", "c9"]}, ["candidates", "'c9'"]),
        (
            {"support": [{"item_id": "u1", "rating": 1}], "exclude": ["u2"]},
            ["support: 'u1'", "exclude: 'u2'"],
        ),
    ],
)
def test_unknown_item_ids_are_named(
    client: TestClient, body: dict[str, Any], named: list[str]
) -> None:
    response = post(client, body)
    assert response.status_code == 422
    detail = response.json()["detail"]
    for fragment in named:
        assert fragment in detail


def test_duplicate_support_ids_are_named(client: TestClient) -> None:
    support = [{"item_id": "a1", "rating": 1}, {"item_id": "a1", "rating": 0}]
    response = post(client, {"support": support})
    assert response.status_code == 422
    assert "a1" in str(response.json()["detail"])
    assert "unique" in str(response.json()["detail"])


def test_rating_outside_label_range(client: TestClient) -> None:
    response = post(client, {"support": [{"item_id": "a1", "rating": 5}]})
    assert response.status_code == 422
    assert "'a1'" in response.json()["detail"]
    assert "[0, 1]" in response.json()["detail"]


def test_support_over_max_support(make_client: AppFactory) -> None:
    client = make_client(max_support=2)
    response = post(client, {"support": SUPPORT})
    assert response.status_code == 422
    assert "at most 2" in response.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"support": SUPPORT, "k": 0},
        {"support": SUPPORT, "k": 101},
        {"support": SUPPORT, "k": "ten"},
        {"support": SUPPORT, "uncertainty_samples": 33},
        {"support": SUPPORT, "uncertainty_samples": -1},
        {"support": SUPPORT, "user": "me"},
        {"support": [{"item_id": "a1", "rating": 1, "weight": 2}]},
        {"support": [{"item_id": 1, "rating": 1}]},
        {"support": [{"item_id": "a1"}]},
        {"support": [{"item_id": "a1", "rating": "NaN"}]},
        {"support": "a1"},
        # booleans are not numbers here (found by bench/fuzz.py: false was read as 0)
        {"support": SUPPORT, "uncertainty_samples": False},
        {"support": SUPPORT, "k": True},
        {"support": [{"item_id": "a1", "rating": True}]},
        {"support": SUPPORT, "k": 5.0},
    ],
)
def test_schema_violations_are_422(client: TestClient, body: dict[str, Any]) -> None:
    response = post(client, body)
    assert response.status_code == 422
    assert isinstance(response.json()["detail"], list)


def test_malformed_json_is_422(client: TestClient) -> None:
    response = client.post(
        "/v1/recommend", content=b'{"support": [', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 422
    assert "X-Request-ID" in response.headers


def test_no_model_gives_503_with_retry_after(make_client: AppFactory, tmp_path: Path) -> None:
    client = make_client(models_dir=tmp_path / "empty")
    response = post(client, {"support": SUPPORT})
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0
    assert "no model loaded" in response.json()["detail"]
    assert response.headers["X-Request-ID"]


def test_a_model_that_breaks_an_invariant_answers_503_counts_it_and_is_marked_failed(
    make_client: AppFactory, tmp_path: Path
) -> None:
    save_poisoned_version(tmp_path / "models", "poisoned")
    client = make_client(models_dir=tmp_path / "models")
    assert post(client, {"support": [{"item_id": "a1", "rating": 1}]}).status_code == 200

    response = post(client, {"support": [{"item_id": "a5", "rating": 1}], "k": 5})
    assert response.status_code == 503
    detail = response.json()["detail"]
    assert "'poisoned'" in detail and "non-finite scores" in detail
    metrics = client.get("/metrics").text
    assert 'tanp_model_faults_total{reason="non_finite",version="poisoned"} 1.0' in metrics
    assert post(client, {"support": [{"item_id": "a5", "rating": 1}]}).status_code == 503
    assert 'tanp_model_faults_total{reason="non_finite",version="poisoned"} 2.0' in (
        client.get("/metrics").text
    )
    state = state_of(client)
    state.models.registry.flush_fault_marks()
    record = {r.name: r for r in registered_versions(state.database.sessions)}["poisoned"]
    assert record.status == "failed" and "non-finite scores" in (record.message or "")
    # the other requests are still answered by the same model
    assert post(client, {"support": [{"item_id": "a2", "rating": 0}]}).status_code == 200


def test_the_response_json_is_the_response_models() -> None:
    answer = Recommendation(
        items=[
            ScoredItem(
                item_id="7",
                name="Sigur Rós",
                score=0.25,
                uncertainty=0.125,
                because=(NamedItem(item_id="3", name="Björk"), NamedItem(item_id="9", name=None)),
            ),
            ScoredItem(item_id="x", name=None, score=-1.5, uncertainty=None),
        ],
        model_version="v1",
        model_sha256="ab" * 32,
        cached=True,
        fallback=None,
        support_size=2,
        inference_seconds=0.001,
    )
    model = RecommendResponse(
        items=[RecommendedItem(**dataclasses.asdict(item)) for item in answer.items],
        model_version="v1",
        model_sha256="ab" * 32,
        cached=True,
        fallback=None,
        request_id="r1",
    )
    assert recommend_response_json(answer, request_id="r1") == model.model_dump_json().encode()
