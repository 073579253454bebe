"""POST /v1/onboarding/questions over HTTP: the answer, the memo, the OpenAPI entry and every
4xx/503 (the choice itself: tests/tanp/test_onboarding.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from app_helpers import ITEMS, NAMES, AppFactory, TestClient, state_of
from model_versions import save_poisoned_version

from app.schemas import QuestionsRequest
from app.serving.model import ServingModel
from tanp.onboarding import next_questions

PATH = "/v1/onboarding/questions"
SUPPORT = [{"item_id": "a3", "rating": 1}, {"item_id": "a20", "rating": 0}]


def post(client: TestClient, body: dict[str, Any]) -> Any:
    return client.post(PATH, json=body)


def test_a_new_listener_gets_k_named_artists_the_scorer_chooses(client: TestClient) -> None:
    response = post(client, {"support": [], "k": 5})
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"items", "model_version", "request_id"}
    assert body["model_version"] == "v1"
    assert body["request_id"] == response.headers["X-Request-ID"]
    model = state_of(client).holder.current
    assert isinstance(model, ServingModel)
    chosen = next_questions(model.scorer, support_items=[], support_labels=[], k=5)
    assert body["items"] == [{"item_id": ITEMS[i], "name": NAMES[i]} for i in chosen]


def test_support_and_excluded_items_are_never_asked(client: TestClient) -> None:
    exclude = ["a0", "a1", "a2", "a4"]
    body = post(client, {"support": SUPPORT, "k": 30, "exclude": exclude}).json()
    asked = [item["item_id"] for item in body["items"]]
    assert len(asked) == len(set(asked)) == 30
    assert not set(asked) & ({"a3", "a20"} | set(exclude))


def test_a_repeated_request_is_answered_from_the_memo_with_the_same_items(
    client: TestClient,
) -> None:
    first = post(client, {"support": SUPPORT, "k": 4, "exclude": ["a1", "a0"]}).json()
    asker = state_of(client).questions
    assert asker.answers is not None
    remembered = len(asker.answers)
    again = post(client, {"support": SUPPORT[::-1], "k": 4, "exclude": ["a0", "a1"]}).json()
    assert again["items"] == first["items"]
    assert len(asker.answers) == remembered
    other = post(client, {"support": SUPPORT, "k": 3, "exclude": ["a0", "a1"]}).json()
    assert len(other["items"]) == 3
    assert len(asker.answers) == remembered + 1


def test_in_openapi_with_examples(client: TestClient) -> None:
    schema = client.get("/openapi.json").json()
    operation = schema["paths"][PATH]["post"]
    assert operation["operationId"] == "onboarding_questions"
    examples = operation["requestBody"]["content"]["application/json"]["examples"]
    for example in examples.values():
        QuestionsRequest.model_validate(example["value"])
    response = schema["components"]["schemas"]["QuestionsResponse"]
    assert set(response["properties"]) == {"items", "model_version", "request_id"}
    because = schema["components"]["schemas"]["RecommendedItem"]["properties"]["because"]
    assert "liked" in because["description"]


@pytest.mark.parametrize(
    ("body", "fragments"),
    [
        ({"support": [{"item_id": "zz", "rating": 1}]}, ["support: 'zz'"]),
        ({"exclude": ["a1", "nope"]}, ["exclude: 'nope'"]),
        ({"support": [{"item_id": "a1", "rating": 3}]}, ["'a1'", "[0, 1]"]),
    ],
)
def test_unknown_ids_and_ratings_out_of_range_are_named(
    client: TestClient, body: dict[str, Any], fragments: list[str]
) -> None:
    response = post(client, body)
    assert response.status_code == 422
    for fragment in fragments:
        assert fragment in response.json()["detail"]


@pytest.mark.parametrize(
    "body",
    [
        {"k": 0},
        {"k": 51},
        {"k": True},
        {"k": 5.0},
        {"candidates": ["a1"]},
        {"uncertainty_samples": 2},
        {"support": [{"item_id": "a1", "rating": 1}, {"item_id": "a1", "rating": 0}]},
        {"support": [{"item_id": "a1", "rating": "NaN"}]},
        {"support": [{"item_id": "", "rating": 1}]},
        {"exclude": "a1"},
        {"support": None},
    ],
)
def test_schema_violations_are_422_naming_the_field(
    client: TestClient, body: dict[str, Any]
) -> None:
    response = post(client, body)
    assert response.status_code == 422
    detail = response.json()["detail"]
    assert isinstance(detail, list) and all(error["loc"][0] == "body" for error in detail)


def test_malformed_json_and_support_over_max_support(make_client: AppFactory) -> None:
    client = make_client(max_support=1)
    broken = client.post(PATH, content=b'{"k": ', headers={"Content-Type": "application/json"})
    assert broken.status_code == 422
    response = post(client, {"support": SUPPORT})
    assert response.status_code == 422
    assert "at most 1" in response.json()["detail"]


def test_no_model_gives_503_with_retry_after(make_client: AppFactory, tmp_path: Path) -> None:
    response = post(make_client(models_dir=tmp_path / "empty"), {"support": []})
    assert response.status_code == 503
    assert int(response.headers["Retry-After"]) > 0


def test_non_finite_scores_answer_503_and_are_counted(
    make_client: AppFactory, tmp_path: Path
) -> None:
    save_poisoned_version(tmp_path / "models", "poisoned")
    client = make_client(models_dir=tmp_path / "models")
    assert post(client, {"support": [{"item_id": "a1", "rating": 1}]}).status_code == 200
    response = post(client, {"support": [{"item_id": "a5", "rating": 1}], "k": 5})
    assert response.status_code == 503
    assert "non-finite scores" in response.json()["detail"]
    metrics = client.get("/metrics").text
    assert 'tanp_model_faults_total{reason="non_finite",version="poisoned"} 1.0' in metrics
