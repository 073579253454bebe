"""Request and response bodies of the public and admin API (SPEC section 6), with examples.
Static bounds live here; those that depend on settings or on the loaded model are checked by
`app.serving.pipeline`. Request bodies are validated strictly: JSON's types as the schema states
them (`true` is not the number 1, `5.0` is not the integer 5).
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StringConstraints, model_validator
from pydantic.config import JsonDict

from tanp.scoring import MAX_UNCERTAINTY_SAMPLES

ItemId = Annotated[str, StringConstraints(min_length=1, max_length=128)]
HARD_MAX_LIST = 10_000  # beyond any MAX_SUPPORT; stops absurd lists before the route sees them

RECOMMEND_REQUEST_EXAMPLE: JsonDict = {
    "support": [
        {"item_id": "289", "rating": 1},
        {"item_id": "72", "rating": 1},
        {"item_id": "1500", "rating": 0},
    ],
    "k": 10,
    "exclude": [],
    "candidates": None,
    "uncertainty_samples": 0,
}

RECOMMEND_RESPONSE_EXAMPLE: JsonDict = {
    "items": [
        {
            "item_id": "283",
            "name": "Coldplay",
            "score": 0.91,
            "uncertainty": None,
            "because": [{"item_id": "289", "name": "Keane"}, {"item_id": "72", "name": "Muse"}],
        },
        {
            "item_id": "61",
            "name": "Radiohead",
            "score": 0.88,
            "uncertainty": None,
            "because": [{"item_id": "72", "name": "Muse"}],
        },
    ],
    "model_version": "20250101-lastfm",
    "model_sha256": "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08",
    "cached": False,
    "fallback": None,
    "request_id": "3f2c8e0a9b7d4c1e8f6a5b4c3d2e1f00",
}


def _repeated(values: list[str]) -> list[str]:
    return [value for value, count in Counter(values).items() if count > 1]


class SupportItem(BaseModel):
    """One rated item of the new user (rating within the model's label range, 0/1 on Last.fm)."""

    model_config = ConfigDict(extra="forbid", strict=True)

    item_id: ItemId
    rating: float = Field(allow_inf_nan=False)


class RecommendRequest(BaseModel):
    """A support set and what to return; see SPEC section 6."""

    model_config = ConfigDict(
        extra="forbid", strict=True, json_schema_extra={"examples": [RECOMMEND_REQUEST_EXAMPLE]}
    )

    support: list[SupportItem] = Field(default_factory=list, max_length=HARD_MAX_LIST)
    k: int = Field(default=10, ge=1, le=100)
    exclude: list[ItemId] = Field(default_factory=list, max_length=HARD_MAX_LIST)
    candidates: list[ItemId] | None = Field(
        default=None,
        max_length=HARD_MAX_LIST,
        description="Rank only these items (null: the whole catalog).",
    )
    uncertainty_samples: int = Field(
        default=0,
        ge=0,
        le=MAX_UNCERTAINTY_SAMPLES,
        description="Draws of z for each returned item's score standard deviation (0: none).",
    )

    @model_validator(mode="after")
    def _unique_ids(self) -> RecommendRequest:
        repeated = _repeated([item.item_id for item in self.support])
        if repeated:
            raise ValueError(f"support item ids must be unique; repeated: {repeated}")
        if self.candidates is not None:
            repeated = _repeated(self.candidates)
            if repeated:
                raise ValueError(f"candidate item ids must be unique; repeated: {repeated}")
        return self


class NamedItem(BaseModel):
    item_id: str
    name: str | None


class RecommendedItem(BaseModel):
    item_id: str
    name: str | None
    score: float = Field(
        description="Model score; for the popularity fallback, the item's train positive "
        "count divided by the catalog's largest count (1.0 = most popular)."
    )
    uncertainty: float | None = Field(
        description="Std of the score over `uncertainty_samples` draws of z; null when 0 "
        "or for the popularity fallback. It shrinks as ratings are added, but it is not a "
        "confidence: it does not predict which items are hits (README, Results)."
    )
    because: list[NamedItem] = Field(
        description="The liked support items that add most to this item's score through the "
        "neighbour affinity (item-item similarity), strongest first, at most 2: for 'because "
        "you liked X and Y'. Empty when no liked item does, for the popularity fallback, and "
        "for models without the neighbour path."
    )


class RecommendResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [RECOMMEND_RESPONSE_EXAMPLE]})

    items: list[RecommendedItem]
    model_version: str
    model_sha256: str = Field(
        description="sha256 of the weights that answered: a retrain may reuse a version's name."
    )
    cached: bool
    fallback: Literal["popularity"] | None
    request_id: str


QUESTIONS_REQUEST_EXAMPLE: JsonDict = {
    "support": [{"item_id": "289", "rating": 1}, {"item_id": "1500", "rating": 0}],
    "k": 5,
    "exclude": ["72"],
}

QUESTIONS_RESPONSE_EXAMPLE: JsonDict = {
    "items": [
        {"item_id": "89", "name": "Lady Gaga"},
        {"item_id": "292", "name": "Christina Aguilera"},
    ],
    "model_version": "20250101-lastfm",
    "request_id": "3f2c8e0a9b7d4c1e8f6a5b4c3d2e1f00",
}


class QuestionsRequest(BaseModel):
    """What a new listener has answered so far and what not to ask again."""

    model_config = ConfigDict(
        extra="forbid", strict=True, json_schema_extra={"examples": [QUESTIONS_REQUEST_EXAMPLE]}
    )

    support: list[SupportItem] = Field(
        default_factory=list,
        max_length=HARD_MAX_LIST,
        description="The answers so far (liked / not liked), possibly none.",
    )
    k: int = Field(default=5, ge=1, le=50, description="How many artists to ask about.")
    exclude: list[ItemId] = Field(
        default_factory=list,
        max_length=HARD_MAX_LIST,
        description='Never ask these (e.g. answered "don\'t know").',
    )

    @model_validator(mode="after")
    def _unique_ids(self) -> QuestionsRequest:
        repeated = _repeated([item.item_id for item in self.support])
        if repeated:
            raise ValueError(f"support item ids must be unique; repeated: {repeated}")
        return self


class QuestionsResponse(BaseModel):
    model_config = ConfigDict(json_schema_extra={"examples": [QUESTIONS_RESPONSE_EXAMPLE]})

    items: list[NamedItem] = Field(
        description="The artists to ask about next, best first: likely known to the listener "
        "and informative for the model; never a support or excluded item."
    )
    model_version: str
    request_id: str


class CatalogItem(BaseModel):
    item_id: str
    name: str | None
    popularity: float = Field(description="Positive count among train users.")


class CatalogSearchResponse(BaseModel):
    items: list[CatalogItem]
    model_version: str


class WorkerStatus(BaseModel):
    """One worker process as it last reported itself (Redis hash `tanp:workers`)."""

    worker: str
    pid: int
    version: str | None
    sha256: str | None = None
    last_reconcile: float | None = None
    updated_at: float


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded"]
    model_version: str | None
    device: str | None
    pid: int | None = Field(default=None, description="Only with the admin bearer token.")
    db: str = Field(description="'ok' or 'down'; with the admin token, why it is down.")
    redis: Literal["ok", "down", "disabled"]
    cache: str
    workers: list[WorkerStatus] = Field(default_factory=list)


class ReloadRequest(BaseModel):
    """Exactly one of `version` (a run directory name under MODELS_DIR) or `latest: true`."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"examples": [{"version": "lastfm-2025-11-29"}, {"latest": True}]},
    )

    version: str | None = Field(default=None, max_length=256)
    latest: bool = False

    @model_validator(mode="after")
    def _one_target(self) -> ReloadRequest:
        if (self.version is None) == (not self.latest):
            raise ValueError('give exactly one of {"version": "..."} or {"latest": true}')
        return self


class VersionInfo(BaseModel):
    """One version as the registry and the disk know it."""

    model_config = ConfigDict(from_attributes=True)

    name: str
    status: str = Field(description="The registry's status; 'unregistered' when only on disk.")
    serving: bool = Field(description="Served by the worker that answered.")
    on_disk: bool
    sha256: str | None = None
    metrics: dict[str, Any] = Field(default_factory=dict)
    message: str | None = None
    created_at: datetime | None = None
    activated_at: datetime | None = None


class ModelsResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    serving: str | None
    registry: str = Field(description="'ok', or why the SQL registry could not be read")
    versions: list[VersionInfo]
    workers: list[dict[str, Any]]


class ActivateResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    version: str
    previous: str | None
    device: str
    sha256: str = Field(default="", description="The activated weights' sha256.")
    unconfirmed_workers: list[str] = Field(
        default_factory=list,
        description="Live workers that did not report the new weights within "
        "RELOAD_CONFIRM_SECONDS (always empty when it is 0).",
    )
