"""POST /v1/recommend and /recommend: ranking, fallback, uncertainty, cache and every 422/503."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
from app_helpers import ITEMS, NAMES, AppFactory, TestClient, tiny_model

from app.cache import cache_key, support_digest
from app.request_log import RequestLogEntry
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


def test_support_and_exclude_never_returned(client: TestClient) -> None:
    exclude = ["a0", "a1", "a2"]
    response = post(client, {"support": SUPPORT, "k": 100, "exclude": exclude})
    ids = returned_ids(response)
    assert len(ids) == len(ITEMS) - len(SUPPORT) - len(exclude)
    assert not set(ids) & ({item["item_id"] for item in SUPPORT} | set(exclude))


def test_candidates_restrict_and_order_results(client: TestClient) -> None:
    candidates = ["a5", "a9", "a3", "a30", "a11"]
    response = post(client, {"support": SUPPORT, "k": 10, "candidates": candidates})
    ids = returned_ids(response)
    # a3 is in the support set, so it is dropped even though it is a candidate.
    assert sorted(ids) == sorted(["a5", "a9", "a30", "a11"])
    scores = [item["score"] for item in response.json()["items"]]
    assert scores == sorted(scores, reverse=True)
    full = {item["item_id"]: item["score"] for item in post(client, {"support": SUPPORT, "k": 100})
            .json()["items"]}  # fmt: skip
    for item in response.json()["items"]:
        assert item["score"] == pytest.approx(full[item["item_id"]], abs=1e-6)


def test_empty_candidates_return_nothing(client: TestClient) -> None:
    response = post(client, {"support": SUPPORT, "candidates": []})
    assert response.status_code == 200
    assert response.json()["items"] == []


def test_empty_support_falls_back_to_popularity(client: TestClient) -> None:
    response = post(client, {"support": [], "k": 4, "exclude": ["a1"], "uncertainty_samples": 4})
    body = response.json()
    assert response.status_code == 200
    assert body["fallback"] == "popularity"
    assert returned_ids(response) == ["a0", "a2", "a3", "a4"]
    # popularity counts are 40, 39, ...; scores are count / largest count
    scores = [item["score"] for item in body["items"]]
    assert scores == pytest.approx([1.0, 38 / 40, 37 / 40, 36 / 40])
    assert all(item["uncertainty"] is None for item in body["items"])


def test_popularity_fallback_with_candidates(client: TestClient) -> None:
    response = post(client, {"support": [], "k": 2, "candidates": ["a30", "a10", "a20"]})
    assert returned_ids(response) == ["a10", "a20"]


def test_uncertainty_present_positive_and_repeatable(client: TestClient) -> None:
    body = {"support": SUPPORT, "k": 5, "uncertainty_samples": 8}
    first = post(client, body).json()
    second = post(client, body).json()
    values = [item["uncertainty"] for item in first["items"]]
    assert all(value is not None and value > 0 for value in values)
    assert values == [item["uncertainty"] for item in second["items"]]
    # Same ranking and scores as without sampling: the scores use z = mean.
    plain = post(client, {"support": SUPPORT, "k": 5}).json()
    assert [item["score"] for item in plain["items"]] == [item["score"] for item in first["items"]]


def test_memory_cache_hit_on_second_identical_request(client: TestClient) -> None:
    first = post(client, {"support": SUPPORT, "k": 10}).json()
    reordered = {"support": [SUPPORT[2], SUPPORT[0], {"item_id": "a7", "rating": 1.0}], "k": 10}
    second = post(client, reordered).json()
    assert first["cached"] is False
    assert second["cached"] is True
    assert second["items"] == first["items"]
    different = post(client, {"support": [*SUPPORT[:2], {"item_id": "a20", "rating": 1}]}).json()
    assert different["cached"] is False
    metrics = client.get("/metrics").text
    assert "tanp_cache_hits_total 1.0" in metrics
    assert "tanp_cache_misses_total 2.0" in metrics


def test_malformed_cache_entry_is_a_miss(client: TestClient) -> None:
    first = post(client, {"support": SUPPORT}).json()
    cache = client.app.state.cache
    pairs = [(str(item["item_id"]), float(str(item["rating"]))) for item in SUPPORT]
    cache.set(cache_key(model_version="v1", digest=support_digest(pairs)), b"not a state")
    second = post(client, {"support": SUPPORT}).json()
    assert second["cached"] is False
    assert second["items"] == first["items"]
    assert post(client, {"support": SUPPORT}).json()["cached"] is True


class RecordingLog:
    def __init__(self) -> None:
        self.entries: list[RequestLogEntry] = []

    def record(self, entry: RequestLogEntry) -> None:
        self.entries.append(entry)


class BrokenLog:
    def record(self, entry: RequestLogEntry) -> None:
        raise RuntimeError("database is gone")


def test_request_log_receives_one_entry_per_recommend(client: TestClient) -> None:
    sink = RecordingLog()
    client.app.state.request_log = sink
    first = post(client, {"support": SUPPORT, "k": 7})
    post(client, {"support": [], "k": 3})
    assert len(sink.entries) == 2
    entry = sink.entries[0]
    assert entry.request_id == first.headers["X-Request-ID"]
    assert (entry.model_version, entry.support_size, entry.k) == ("v1", 3, 7)
    assert entry.cache_hit is False and entry.fallback is None and entry.latency_ms > 0
    assert sink.entries[1].fallback == "popularity"


def test_broken_request_log_never_fails_a_request(client: TestClient) -> None:
    client.app.state.request_log = BrokenLog()
    assert post(client, {"support": SUPPORT}).status_code == 200
    assert "tanp_request_log_failures_total 1.0" in client.get("/metrics").text


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
