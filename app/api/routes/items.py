"""`GET /v1/items` (catalog search for onboarding UIs) and `GET /v1/items/{item_id}`.

Served from the in-memory `ServingModel` (ids, names, popularity, search keys); no database
involved. `async` routes: they only read precomputed lists.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from app.api.deps import ServingModelDep
from app.errors import NotFoundError
from app.schemas import CatalogItem, CatalogSearchResponse
from app.serving.model import ServingModel

router = APIRouter(prefix="/v1/items", tags=["items"])


def _item(model: ServingModel, index: int) -> CatalogItem:
    return CatalogItem(
        item_id=model.items[index],
        name=model.names[index],
        popularity=float(model.popularity[index]),
    )


@router.get("", response_model=CatalogSearchResponse)
async def search_items(
    model: ServingModelDep,
    q: Annotated[str, Query(max_length=200, description="Case-insensitive substring.")] = "",
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
) -> CatalogSearchResponse:
    """Items whose name contains `q`, then items whose id contains it, most popular first.

    An empty `q` lists the most popular items.
    """
    return CatalogSearchResponse(
        items=[_item(model, index) for index in model.search(q, limit=limit)],
        model_version=model.version,
    )


@router.get("/{item_id}", response_model=CatalogItem, responses={404: {"description": "Unknown."}})
async def get_item(item_id: str, model: ServingModelDep) -> CatalogItem:
    index = model.index_of.get(item_id)
    if index is None:
        raise NotFoundError(f"unknown item id {item_id!r}")
    return _item(model, index)
