"""Version names: a version is the name of a run directory directly under MODELS_DIR. The one
place that validates a name and turns it into a path: never a URL, a path or a link that leads
out of MODELS_DIR (`InvalidVersionError`, 400); a name without a run directory is
`UnknownVersionError` (404). Knows nothing about loading models.
"""

from __future__ import annotations

import re
from pathlib import Path

from app.errors import InvalidVersionError, UnknownVersionError
from tanp.checkpoint import MANIFEST_FILE, WEIGHTS_FILE

VERSION_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def resolve_version(models_dir: Path, version: str) -> Path:
    """The run directory of `version`; raises InvalidVersionError or UnknownVersionError."""
    if "://" in version:
        raise InvalidVersionError(f"{version!r} is a URL; give a version name under MODELS_DIR")
    if not VERSION_PATTERN.fullmatch(version) or version in (".", ".."):
        raise InvalidVersionError(
            f"{version!r} is not a version name: use the name of a run directory under "
            "MODELS_DIR (letters, digits, '.', '_', '-'), never a path"
        )
    candidate = models_dir / version
    if candidate.is_symlink() or not candidate.resolve().is_relative_to(models_dir.resolve()):
        raise InvalidVersionError(f"version {version!r} leaves MODELS_DIR")
    if not candidate.exists():
        raise UnknownVersionError(f"no run directory named {version!r} under MODELS_DIR")
    if not (candidate / MANIFEST_FILE).is_file():
        raise InvalidVersionError(
            f"{version!r} under MODELS_DIR is not a run directory (no {MANIFEST_FILE})"
        )
    for name in (MANIFEST_FILE, WEIGHTS_FILE):
        if not (candidate / name).resolve().is_relative_to(models_dir.resolve()):
            raise InvalidVersionError(f"{version!r}: {name} is a link that leaves MODELS_DIR")
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


def newest_version(models_dir: Path) -> str:
    """The newest run directory's name; UnknownVersionError when there is none."""
    versions = list_versions(models_dir)
    if not versions:
        raise UnknownVersionError("no run directory under MODELS_DIR")
    return versions[-1]
