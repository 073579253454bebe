"""Shared constants and builders for the service tests (imported by conftest and tests)."""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch
from fastapi import FastAPI

from app.state import ServiceState
from tanp.model import TaNP, TaNPConfig

with warnings.catch_warnings():
    # Starlette prefers the httpx2 package; httpx 0.28 works and is what the project pins.
    warnings.filterwarnings("ignore", message="Using `httpx` with `starlette.testclient`")
    from fastapi.testclient import TestClient

NUM_ITEMS = 40
ITEMS = [f"a{index}" for index in range(NUM_ITEMS)]
NAMES = [f"Artist {index}" for index in range(NUM_ITEMS)]


def tiny_model(seed: int = 0) -> TaNP:
    torch.manual_seed(seed)
    model = TaNP(TaNPConfig(num_items=NUM_ITEMS))
    # Descending counts: a0 is the most popular, a39 the least.
    model.item_popularity.copy_(torch.arange(NUM_ITEMS, 0, -1, dtype=torch.float32))
    return model


def state_of(client: TestClient) -> ServiceState:
    """The typed state the started app's lifespan built."""
    app = client.app
    assert isinstance(app, FastAPI)
    state: ServiceState = app.state.service
    return state


AppFactory = Callable[..., TestClient]

__all__ = ["ITEMS", "NAMES", "NUM_ITEMS", "AppFactory", "TestClient", "state_of", "tiny_model"]
