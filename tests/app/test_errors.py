"""Hostile input gets a 4xx in the `{"detail": ...}` shape, never a 500: non-finite numbers
(Python's json accepts NaN, Infinity and 1e309), lone surrogates in strings, NUL bytes, bodies
that are not UTF-8 or nest too deep; the detail it answers is itself valid JSON."""

from __future__ import annotations

import json
import math

import pytest
from app_helpers import TestClient

from app.errors import json_safe

RECOMMEND_BODIES = [
    b'{"support": [{"item_id": "a1", "rating": NaN}]}',
    b'{"support": [{"item_id": "a1", "rating": Infinity}]}',
    b'{"support": [{"item_id": "a1", "rating": -Infinity}]}',
    b'{"support": [{"item_id": "a1", "rating": 1e309}]}',
    b'{"support": [], "k": NaN}',
    b'{"support": [], "k": 1e309}',
    b'{"support": [], "uncertainty_samples": -Infinity}',
    b'{"support": [{"item_id": "\\ud800", "rating": 1}]}',
    b'{"support": [], "exclude": ["a1", "\\udfff"]}',
    b'{"support": [], "candidates": ["\\ud83d"]}',
    b'{"support": [], "\\ud800": 1}',
    b'{"\\ud800": NaN}',
    b'{"support": [{"item_id": "a\\u0000", "rating": 1}]}',
    b'{"support": [], "exclude": ["\xff\xfe"]}',
    b"[" * 5000 + b"]" * 5000,
    b'{"support": "\\ud800"}',
]


def strict_json(text: str) -> object:
    """Parse as a strict client would: no NaN/Infinity, no lone surrogates."""

    def refuse(constant: str) -> float:
        raise ValueError(f"non-standard JSON constant {constant}")

    value = json.loads(text, parse_constant=refuse)
    text.encode("utf-8")  # a lone surrogate could not have been sent as UTF-8
    return value


@pytest.mark.parametrize("body", RECOMMEND_BODIES, ids=range(len(RECOMMEND_BODIES)))
@pytest.mark.parametrize("path", ["/v1/recommend", "/recommend"])
def test_hostile_recommend_bodies_are_4xx_with_a_json_detail(
    client: TestClient, body: bytes, path: str
) -> None:
    response = client.post(path, content=body, headers={"Content-Type": "application/json"})
    assert response.status_code in (400, 422), response.text
    payload = strict_json(response.text)
    assert isinstance(payload, dict) and payload["detail"]
    assert "x-request-id" in response.headers


def test_a_non_finite_rating_is_named_in_the_422(client: TestClient) -> None:
    response = client.post(
        "/v1/recommend",
        content=b'{"support": [{"item_id": "a1", "rating": NaN}]}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "support", 0, "rating"]
    assert error["input"] == "nan"  # the input echoed as a string: JSON has no NaN


def test_a_lone_surrogate_is_echoed_escaped(client: TestClient) -> None:
    response = client.post(
        "/v1/recommend",
        content=b'{"support": [{"item_id": "\\ud800", "rating": 1}]}',
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 422
    assert "\\ud800" in json.dumps(response.json())


def test_json_safe_keeps_plain_values_and_mends_the_rest() -> None:
    assert json_safe({"a": [1, 2.5, None, True, "x"]}) == {"a": [1, 2.5, None, True, "x"]}
    assert json_safe([math.nan, math.inf, -math.inf]) == ["nan", "inf", "-inf"]
    assert json_safe({"\ud800": "a\udfffb"}) == {"\\ud800": "a\\udfffb"}
    assert json_safe(("loc", 0)) == ["loc", 0]
    assert json_safe(ValueError("bad")) == "bad"
