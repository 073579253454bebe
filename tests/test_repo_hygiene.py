"""The pre-commit hooks: large files, datasets and checkpoints never reach git."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]


def _hooks() -> dict[str, dict[str, Any]]:
    config = yaml.safe_load((ROOT / ".pre-commit-config.yaml").read_text())
    return {hook["id"]: hook for repo in config["repos"] for hook in repo["hooks"]}


def _git(repo: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(repo), *args], check=True, capture_output=True)


def test_large_file_hook_refuses_a_staged_file_over_its_limit(tmp_path: Path) -> None:
    hook = _hooks()["check-added-large-files"]
    (limit,) = [int(arg.split("=")[1]) for arg in hook["args"] if arg.startswith("--maxkb=")]
    _git(tmp_path, "init", "-q")
    (tmp_path / "small.txt").write_bytes(b"x" * 1024)
    (tmp_path / "big.bin").write_bytes(b"x" * (limit + 1) * 1024)
    _git(tmp_path, "add", "small.txt", "big.bin")
    command = [str(Path(sys.executable).parent / hook["entry"]), *hook["args"]]
    refused = subprocess.run(
        [*command, "big.bin"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    passed = subprocess.run(
        [*command, "small.txt"], cwd=tmp_path, capture_output=True, text=True, check=False
    )
    assert refused.returncode == 1 and "big.bin" in refused.stdout
    assert passed.returncode == 0


def test_artifact_hook_matches_checkpoints_and_episodes_and_no_tracked_file() -> None:
    hook = _hooks()["no-data-or-checkpoints"]
    assert hook["language"] == "fail"
    pattern = re.compile(hook["files"])
    for artifact in ("runs/paper/model.safetensors", "prep/train.npz", "x/weights.pt",
                     "data/lastfm/user_artists.dat", "models/v1/manifest.json"):  # fmt: skip
        assert pattern.search(artifact), artifact
    tracked = subprocess.run(
        ["git", "-C", str(ROOT), "ls-files"], capture_output=True, text=True, check=True
    ).stdout.split()
    assert tracked and not [path for path in tracked if pattern.search(path)]
