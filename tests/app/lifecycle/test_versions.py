"""Version names: resolution under MODELS_DIR (every refusal a ServingError), listing, newest."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from model_versions import save_version, two_versions

from app.errors import InvalidVersionError, UnknownVersionError
from app.lifecycle.versions import list_versions, newest_version, resolve_version


@pytest.fixture
def models(tmp_path: Path) -> Path:
    root = two_versions(tmp_path / "models")
    save_version(tmp_path / "outside", "evil")
    (root / "escape").symlink_to(tmp_path / "outside" / "evil", target_is_directory=True)
    (root / "empty").mkdir()
    return root


@pytest.mark.parametrize(
    ("name", "error", "fragment"),
    [
        ("../x", InvalidVersionError, "never a path"),
        ("a/b", InvalidVersionError, "never a path"),
        (".hidden", InvalidVersionError, "never a path"),
        ("s3://bucket/v1", InvalidVersionError, "is a URL"),
        ("escape", InvalidVersionError, "leaves MODELS_DIR"),
        ("empty", InvalidVersionError, "not a run directory (no manifest.json)"),
        ("v9", UnknownVersionError, "no run directory named 'v9'"),
    ],
)
def test_refusals(models: Path, name: str, error: type[Exception], fragment: str) -> None:
    with pytest.raises(error, match=fragment.replace("(", r"\(").replace(")", r"\)")):
        resolve_version(models, name)


def test_a_run_directory_resolves_and_lists_oldest_first(models: Path) -> None:
    assert resolve_version(models, "v1") == models / "v1"
    assert list_versions(models) == ["v1", "v2"]  # no symlink, no directory without a manifest
    assert newest_version(models) == "v2"
    future = os.stat(models / "v1" / "manifest.json").st_mtime + 1000
    os.utime(models / "v1" / "manifest.json", (future, future))
    assert newest_version(models) == "v1"


def test_no_run_directory_at_all(tmp_path: Path) -> None:
    assert list_versions(tmp_path / "missing") == []
    with pytest.raises(UnknownVersionError, match="no run directory under MODELS_DIR"):
        newest_version(tmp_path)
