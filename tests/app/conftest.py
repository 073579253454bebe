"""Fixtures for the service tests: a tiny saved model and apps built around it.

The model is `TaNP(TaNPConfig(num_items=40))` with non-uniform popularity, saved once per
session; every app gets its own MODELS_DIR copy-free view of it through settings.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from app_helpers import ITEMS, NAMES, AppFactory, TestClient, tiny_model

from app.main import create_app
from app.settings import Settings
from tanp.checkpoint import save_checkpoint


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    save_checkpoint(root / "v1", model=tiny_model(), items=ITEMS, item_names=NAMES, version="v1")
    return root


@pytest.fixture
def make_client(models_dir: Path, tmp_path: Path) -> Iterator[AppFactory]:
    """Builds started TestClients (lifespan entered); closes them at teardown."""
    clients: list[TestClient] = []

    def make(**overrides: Any) -> TestClient:
        # Explicit values so a REDIS_URL or ACTIVE_MODEL in the environment cannot leak in.
        values: dict[str, Any] = {
            "models_dir": models_dir,
            "device": "cpu",
            "redis_url": None,
            "active_model": None,
            # Never the default ./tanp.db: each test gets its own migrated SQLite file.
            "database_url": f"sqlite:///{tmp_path / 'tanp.db'}",
            "migrate_on_start": True,
            "request_log_spool_dir": tmp_path / "spool",
        }
        values.update(overrides)
        client = TestClient(create_app(Settings(**values)))
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: AppFactory) -> TestClient:
    return make_client()
