"""Fixtures of the storage tests: a migrated SQLite database."""

from __future__ import annotations

from pathlib import Path

import pytest
from model_versions import migrated_sqlite

from app.storage.db import SessionFactory


@pytest.fixture
def sessions(tmp_path: Path) -> SessionFactory:
    return migrated_sqlite(tmp_path / "log.db")[1]
