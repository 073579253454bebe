"""The model holder: one atomically swapped reference to the serving model.

Versions are run directories directly under MODELS_DIR; a version name is never a path or a
URL. A request reads `holder.current` once and keeps that object, so in-flight requests finish
on the model they started with while `load` swaps in a new one. A failed load leaves the
current model serving.
"""

from __future__ import annotations

import logging
import re
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from tanp.checkpoint import MANIFEST_FILE, CheckpointError, LoadedModel, build_model
from tanp.scoring import popularity_ranking

logger = logging.getLogger(__name__)

VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


class VersionError(ValueError):
    """A version name that is not a run directory under MODELS_DIR."""


@dataclass(frozen=True)
class ServingModel:
    """A loaded model plus the lookups the service needs, computed once at load."""

    loaded: LoadedModel
    index_of: dict[str, int]
    popularity_order: np.ndarray

    @property
    def version(self) -> str:
        """The version name: the run directory's name under MODELS_DIR."""
        return self.loaded.run_dir.name

    @property
    def items(self) -> list[str]:
        return self.loaded.items

    def name_of(self, index: int) -> str | None:
        names = self.loaded.item_names
        return names[index] if names is not None else None


def resolve_version(models_dir: Path, version: str) -> Path:
    """The run directory of `version`, refusing anything that could leave MODELS_DIR."""
    if not VERSION_PATTERN.fullmatch(version) or version in (".", ".."):
        raise VersionError(
            f"invalid version name {version!r}: letters, digits, '.', '_' and '-' only"
        )
    root = models_dir.resolve()
    candidate = models_dir / version
    if candidate.is_symlink() or not candidate.resolve().is_relative_to(root):
        raise VersionError(f"version {version!r} leaves MODELS_DIR")
    if not (candidate / MANIFEST_FILE).is_file():
        raise VersionError(f"no run directory named {version!r} under MODELS_DIR")
    return candidate


def list_versions(models_dir: Path) -> list[str]:
    """Run directories under MODELS_DIR, oldest first by manifest modification time."""
    if not models_dir.is_dir():
        return []
    runs = [
        path
        for path in models_dir.iterdir()
        if path.is_dir()
        and not path.is_symlink()
        and VERSION_PATTERN.fullmatch(path.name)
        and (path / MANIFEST_FILE).is_file()
    ]
    runs.sort(key=lambda path: ((path / MANIFEST_FILE).stat().st_mtime, path.name))
    return [path.name for path in runs]


def prepare(loaded: LoadedModel) -> ServingModel:
    """Lookups computed once per model version (never per request)."""
    return ServingModel(
        loaded=loaded,
        index_of={item: index for index, item in enumerate(loaded.items)},
        popularity_order=popularity_ranking(loaded.model),
    )


class ModelHolder:
    """Owns the current ServingModel; `load` builds the next one beside it, then swaps."""

    def __init__(self, *, models_dir: Path, device: str) -> None:
        self.models_dir = models_dir
        self.device = device
        self._current: ServingModel | None = None
        self._load_lock = threading.Lock()
        self.last_error: str | None = None

    @property
    def current(self) -> ServingModel | None:
        return self._current

    def load(self, version: str) -> ServingModel:
        """Resolve, verify (sha256, format, shapes, probe), then swap; raises on failure."""
        run_dir = resolve_version(self.models_dir, version)
        with self._load_lock:
            try:
                loaded = build_model(run_dir, self.device)
            except CheckpointError as error:
                self.last_error = str(error)
                logger.error("model load failed, keeping %s: %s", self._version(), error)
                raise
            serving = prepare(loaded)
            self._current = serving
            self.last_error = None
        logger.info("serving model %s on %s", serving.version, loaded.device)
        return serving

    def clear(self) -> None:
        """Stop serving (tests and shutdown): readiness turns false."""
        self._current = None

    def _version(self) -> str | None:
        current = self._current
        return current.version if current is not None else None
