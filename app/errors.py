"""The service's one exception tree, mapped to FastAPI's `{"detail": ...}` error shape.

    ServingError                 500  base class; never raised directly
    ├── InvalidRequestError      422  input that parses but makes no sense for the model
    │   ├── UnknownItemsError    422  item ids not in the served catalog (named in the detail)
    │   └── RatingRangeError     422  ratings outside the model's label range
    ├── InvalidVersionError      400  a version "name" that is a path, a URL or leaves MODELS_DIR
    ├── UnauthorizedError        401  an admin call without the right bearer token (challenge)
    ├── NotFoundError            404  an item (or other resource) that does not exist
    │   └── UnknownVersionError  404  no run directory of that name under MODELS_DIR
    ├── ModelRefusedError        422  a checkpoint that failed verification (old model serves on)
    ├── ModelUnavailableError    503  no model loaded yet (carries Retry-After)
    │   ├── RegistryUnavailableError 503  an activation SQL could not record: nothing changed
    │   └── OverloadedError      503  BATCH_MAX_PENDING calls already wait for the model
    └── ModelFaultError          503  the served model broke an invariant answering this request

Malformed JSON, wrong types and out-of-range values are FastAPI's `RequestValidationError`: 422
with its list of errors, made JSON-safe here (a NaN, an infinity or a lone surrogate in the input
is echoed as an escaped string, never allowed to break the answer).
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse

MAX_NAMED_IDS = 20  # an error message names at most this many ids, then says how many more
RETRY_AFTER_SECONDS = 5  # what a 503 asks a client to wait


class ServingError(Exception):
    """Base of every error the service turns into an HTTP response on purpose."""

    status_code = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail

    def headers(self) -> dict[str, str]:
        return {}


class InvalidRequestError(ServingError):
    status_code = 422


class UnknownItemsError(InvalidRequestError):
    """Names the unknown ids of each request field, e.g. `support: '9999'; exclude: 'x'`."""

    def __init__(self, unknown_by_field: dict[str, list[str]]) -> None:
        self.unknown_by_field = {
            field: list(dict.fromkeys(ids)) for field, ids in unknown_by_field.items() if ids
        }
        parts = [f"{field}: {name_ids(ids)}" for field, ids in self.unknown_by_field.items()]
        super().__init__("unknown item ids in " + "; ".join(parts))


class RatingRangeError(InvalidRequestError):
    pass


class InvalidVersionError(ServingError):
    status_code = 400


class UnauthorizedError(ServingError):
    status_code = 401

    def __init__(self, detail: str, *, challenge: str = "Bearer") -> None:
        super().__init__(detail)
        self.challenge = challenge

    def headers(self) -> dict[str, str]:
        return {"WWW-Authenticate": self.challenge}


class NotFoundError(ServingError):
    status_code = 404


class UnknownVersionError(NotFoundError):
    pass


class ModelRefusedError(ServingError):
    status_code = 422


class ModelUnavailableError(ServingError):
    status_code = 503

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(RETRY_AFTER_SECONDS)}


class RegistryUnavailableError(ModelUnavailableError):
    """An activation the model registry could not record: refused so that no acknowledged
    reload is ever undone; nothing was changed."""


class OverloadedError(ModelUnavailableError):
    """This worker already has BATCH_MAX_PENDING recommend calls waiting: refused at once
    (with Retry-After) rather than queued without bound."""

    def headers(self) -> dict[str, str]:
        return {"Retry-After": "1"}


class ModelFaultError(ServingError):
    """The served model broke an invariant on this request (non-finite scores, an index outside
    the catalog): counted, and the version is marked failed in the registry."""

    status_code = 503

    def __init__(self, *, version: str, reason: str, kind: str) -> None:
        super().__init__(
            f"model {version!r} could not answer this request: {reason}; the version is marked "
            "failed, an operator should activate another one"
        )
        self.version = version
        self.kind = kind  # the metric's label: "non_finite" or "error"


def name_ids(ids: list[str]) -> str:
    """`'a', 'b'` style list, cut after MAX_NAMED_IDS so a huge bad request stays a small reply."""
    shown = ", ".join(repr(item) for item in ids[:MAX_NAMED_IDS])
    hidden = len(ids) - MAX_NAMED_IDS
    return shown + (f" and {hidden} more" if hidden > 0 else "")


def error_response(error: ServingError) -> JSONResponse:
    return JSONResponse(
        status_code=error.status_code,
        content={"detail": json_safe(error.detail)},
        headers=error.headers(),
    )


def json_safe(value: object) -> Any:
    """`value` as strict JSON can carry it: non-finite floats become their names ("nan",
    "inf", "-inf"), lone surrogates in strings and keys become backslash escapes, tuples become
    lists and anything else unknown its `str`."""
    if isinstance(value, str):
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    if isinstance(value, bool | int) or value is None:
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dict):
        return {json_safe(str(key)): json_safe(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(item) for item in value]
    return json_safe(str(value))


async def _handle_serving_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, ServingError)
    return error_response(error)


async def _handle_validation_error(request: Request, error: Exception) -> JSONResponse:
    assert isinstance(error, RequestValidationError)
    detail = json_safe(jsonable_encoder(error.errors()))
    return JSONResponse(status_code=422, content={"detail": detail})


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(ServingError, _handle_serving_error)
    app.add_exception_handler(RequestValidationError, _handle_validation_error)
