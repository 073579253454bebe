"""`POST /v1/recommend` (and its alias `POST /recommend`): maps HTTP to
`Recommender.recommend_async` and writes `RecommendResponse`'s JSON directly (no second model
build and validation). The request uses the one `ServingModel` its dependency read, even if a
reload swaps the holder meanwhile.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Response
from pydantic_core import to_json

from app.api.deps import RecommenderDep, RequestIdDep, ServingModelDep
from app.schemas import (
    RECOMMEND_REQUEST_EXAMPLE,
    RECOMMEND_RESPONSE_EXAMPLE,
    RecommendRequest,
    RecommendResponse,
)
from app.serving.pipeline import Recommendation

router = APIRouter(tags=["recommend"])

RecommendBody = Annotated[
    RecommendRequest,
    Body(
        openapi_examples={
            "three rated artists": {"value": RECOMMEND_REQUEST_EXAMPLE},
            "brand-new user": {
                "summary": "empty support: popularity fallback",
                "value": {"support": [], "k": 5},
            },
        }
    ),
]
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {"example": RECOMMEND_RESPONSE_EXAMPLE}}},
    400: {"description": "A body that cannot be read as JSON text (not UTF-8, nested too deep)."},
    413: {"description": "Request body over MAX_BODY_BYTES."},
    422: {"description": "Unknown item ids (named), duplicates, out-of-range values."},
    503: {"description": "No model loaded yet; retry after `Retry-After` seconds."},
}


async def recommend(
    body: RecommendBody,
    model: ServingModelDep,
    recommender: RecommenderDep,
    request_id: RequestIdDep,
) -> Response:
    """Top-k items for a new user's support set; support and `exclude` items never appear.

    Empty support: the popularity ranking, flagged `"fallback": "popularity"`, with scores
    = train positive count / the largest count. `uncertainty_samples` = S > 0: each returned
    item's score std over S draws of z, seeded by the support set so answers repeat.
    """
    answer = await recommender.recommend_async(model=model, request=body, request_id=request_id)
    return Response(
        recommend_response_json(answer, request_id=request_id), media_type="application/json"
    )


def recommend_response_json(answer: Recommendation, *, request_id: str) -> bytes:
    """`RecommendResponse`'s JSON for an answer, byte for byte what FastAPI's `response_model`
    path writes, without building and re-validating the models (every field's type is fixed
    by `Recommendation`)."""
    return to_json(
        {
            "items": [
                {
                    "item_id": item.item_id,
                    "name": item.name,
                    "score": item.score,
                    "uncertainty": item.uncertainty,
                    "because": [
                        {"item_id": liked.item_id, "name": liked.name} for liked in item.because
                    ],
                }
                for item in answer.items
            ],
            "model_version": answer.model_version,
            "model_sha256": answer.model_sha256,
            "cached": answer.cached,
            "fallback": answer.fallback,
            "request_id": request_id,
        }
    )


for _path, _in_schema_name in (("/v1/recommend", "recommend"), ("/recommend", "recommend_alias")):
    router.add_api_route(
        _path,
        recommend,
        methods=["POST"],
        response_model=RecommendResponse,
        responses=_RESPONSES,
        name=_in_schema_name,
        operation_id=_in_schema_name,
        summary="Recommend items for a support set"
        + (" (alias of /v1/recommend)" if _path == "/recommend" else ""),
    )
