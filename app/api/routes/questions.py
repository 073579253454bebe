"""`POST /v1/onboarding/questions`: maps HTTP to `QuestionAsker.ask`. A plain `def` route: the
choice runs torch, so FastAPI runs it on its thread pool, off the event loop."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body

from app.api.deps import QuestionAskerDep, RequestIdDep, ServingModelDep
from app.schemas import (
    QUESTIONS_REQUEST_EXAMPLE,
    QUESTIONS_RESPONSE_EXAMPLE,
    NamedItem,
    QuestionsRequest,
    QuestionsResponse,
)

router = APIRouter(tags=["onboarding"])

QuestionsBody = Annotated[
    QuestionsRequest,
    Body(
        openapi_examples={
            "two answers so far": {"value": QUESTIONS_REQUEST_EXAMPLE},
            "brand-new listener": {
                "summary": "nothing answered yet",
                "value": {"support": [], "k": 5},
            },
        }
    ),
]
_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {"content": {"application/json": {"example": QUESTIONS_RESPONSE_EXAMPLE}}},
    400: {"description": "A body that cannot be read as JSON text (not UTF-8, nested too deep)."},
    413: {"description": "Request body over MAX_BODY_BYTES."},
    422: {"description": "Unknown item ids (named), duplicates, out-of-range values."},
    503: {
        "description": "No model loaded yet, or the model scored NaN (retry after "
        "`Retry-After` seconds)."
    },
}


@router.post(
    "/v1/onboarding/questions",
    response_model=QuestionsResponse,
    responses=_RESPONSES,
    operation_id="onboarding_questions",
    summary="The artists to ask a new listener about next",
)
def onboarding_questions(
    body: QuestionsBody,
    model: ServingModelDep,
    asker: QuestionAskerDep,
    request_id: RequestIdDep,
) -> QuestionsResponse:
    """The k artists to ask about next: likely known to the listener (popularity) and
    informative for the model (the answer's entropy, the expected change of the current
    recommendations and of z's spread), not near one another; never a support or excluded
    item (send artists answered "don't know" in `exclude`)."""
    questions = asker.ask(model=model, request=body, request_id=request_id)
    return QuestionsResponse(
        items=[NamedItem(item_id=item.item_id, name=item.name) for item in questions.items],
        model_version=questions.model_version,
        request_id=request_id,
    )
