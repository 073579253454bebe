"""`GET /v1/items` (catalog search for onboarding UIs) and `GET /v1/items/{item_id}`.

Served from the in-memory model (item ids, names, popularity); no database involved. `async`
routes: they only read precomputed lists.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import CatalogDep, CatalogView
from app.errors import NotFoundError
from app.schemas import CatalogItem, CatalogSearchResponse

router = APIRouter(prefix="/v1/items", tags=["items"])


def _item(catalog: CatalogView, index: int) -> CatalogItem:
    return CatalogItem(
        item_id=catalog.serving.items[index],
        name=catalog.names[index],
        popularity=float(catalog.popularity[index]),
    )


@router.get("", response_model=CatalogSearchResponse)
async def search_items(
    catalog: CatalogDep,
    q: Annotated[str, Query(max_length=200, description="Case-insensitive substring.")] = "",
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> CatalogSearchResponse:
    """Items whose name contains `q`, then items whose id contains it, most popular first.

    An empty `q` lists the most popular items.
    """
    needle = q.strip().casefold()
    found: list[int] = []
    if not needle:
        found = [int(index) for index in catalog.serving.popularity_order[:limit]]
    else:
        name_hits: list[int] = []
        id_hits: list[int] = []
        for index in catalog.serving.popularity_order.tolist():
            if needle in catalog.lowered_names[index]:
                name_hits.append(index)
            elif needle in catalog.lowered_ids[index]:
                id_hits.append(index)
            if len(name_hits) >= limit:
                break
        found = (name_hits + id_hits)[:limit]
    return CatalogSearchResponse(
        items=[_item(catalog, index) for index in found],
        model_version=catalog.serving.version,
    )


@router.get("/{item_id}", response_model=CatalogItem, responses={404: {"description": "Unknown."}})
async def get_item(item_id: str, catalog: CatalogDep) -> CatalogItem:
    index = catalog.serving.index_of.get(item_id)
    if index is None:
        raise NotFoundError(f"unknown item id {item_id!r}")
    return _item(catalog, index)
