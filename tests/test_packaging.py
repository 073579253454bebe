"""The built wheel carries what the installed package needs outside the source tree.

The Docker images install the project from its wheel, so the onboarding page (app/static) and
the Alembic scripts (app/migrations) must be package data, and nothing may land in
site-packages under a generic top-level name.
"""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def wheel_names(tmp_path_factory: pytest.TempPathFactory) -> set[str]:
    out = tmp_path_factory.mktemp("wheel")
    # The source tree is copied first: an in-place build would leave build/ and *.egg-info behind.
    source = out / "src"
    files = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        check=True,
        capture_output=True,
    ).stdout.split(b"\0")
    for name in filter(None, files):
        path = ROOT / name.decode()
        if path.is_file():
            target = source / name.decode()
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(path.read_bytes())
    build = [sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation"]
    subprocess.run([*build, "--wheel-dir", str(out / "dist"), str(source)], check=True)
    (wheel,) = (out / "dist").glob("tanp_rec-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        return set(archive.namelist())


@pytest.mark.slow
def test_wheel_ships_the_page_and_the_migrations(wheel_names: set[str]) -> None:
    for static in sorted((ROOT / "app" / "static").iterdir()):
        assert f"app/static/{static.name}" in wheel_names
    migrations = ROOT / "app" / "migrations"
    for path in sorted(migrations.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts:
            assert path.relative_to(ROOT).as_posix() in wheel_names


@pytest.mark.slow
def test_wheel_has_only_the_project_packages_at_top_level(wheel_names: set[str]) -> None:
    top = {name.split("/", 1)[0] for name in wheel_names if not name.startswith("tanp_rec-")}
    assert top == {"tanp", "training", "app"}
