"""GET /v1/items (search by name, then id, most popular first) and GET /v1/items/{item_id}."""

from __future__ import annotations

from pathlib import Path

from app_helpers import AppFactory, TestClient


def ids(response: object) -> list[str]:
    return [item["item_id"] for item in response.json()["items"]]  # type: ignore[attr-defined]


def test_empty_query_lists_most_popular(client: TestClient) -> None:
    response = client.get("/v1/items", params={"limit": 3})
    assert response.status_code == 200
    assert response.json()["items"] == [
        {"item_id": "a0", "name": "Artist 0", "popularity": 40.0},
        {"item_id": "a1", "name": "Artist 1", "popularity": 39.0},
        {"item_id": "a2", "name": "Artist 2", "popularity": 38.0},
    ]
    assert response.json()["model_version"] == "v1"


def test_search_is_case_insensitive_substring_by_popularity(client: TestClient) -> None:
    response = client.get("/v1/items", params={"q": "ARTIST 1"})
    # "Artist 1", "Artist 10".."Artist 19" contain "artist 1"; a1 is the most popular.
    assert ids(response) == ["a1", *[f"a{index}" for index in range(10, 20)]]


def test_search_falls_back_to_ids_after_names(client: TestClient) -> None:
    response = client.get("/v1/items", params={"q": "a3"})
    # No name contains "a3", ids a3 and a30..a39 do.
    assert ids(response) == ["a3", *[f"a{index}" for index in range(30, 40)]]


def test_limit_cuts_and_bounds(client: TestClient) -> None:
    assert len(ids(client.get("/v1/items", params={"q": "artist", "limit": 5}))) == 5
    assert len(ids(client.get("/v1/items", params={"q": "artist"}))) == 20
    assert client.get("/v1/items", params={"limit": 0}).status_code == 422
    assert client.get("/v1/items", params={"limit": 101}).status_code == 422


def test_no_match_is_an_empty_list(client: TestClient) -> None:
    assert ids(client.get("/v1/items", params={"q": "zzz"})) == []


def test_get_item_and_404(client: TestClient) -> None:
    response = client.get("/v1/items/a5")
    assert response.json() == {"item_id": "a5", "name": "Artist 5", "popularity": 35.0}
    missing = client.get("/v1/items/nope")
    assert missing.status_code == 404
    assert missing.json() == {"detail": "unknown item id 'nope'"}


def test_items_without_a_model_are_503(make_client: AppFactory, tmp_path: Path) -> None:
    client = make_client(models_dir=tmp_path)
    response = client.get("/v1/items")
    assert response.status_code == 503
    assert "Retry-After" in response.headers
