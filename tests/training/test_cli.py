"""`tanp-train` options that would otherwise do nothing say so."""

from __future__ import annotations

from pathlib import Path

import pytest

from training.cli import main


@pytest.mark.parametrize(
    ("arguments", "warned"),
    [
        (["--split", "tanp", "--seed", "3"], True),
        (["--split", "random", "--seed", "3"], False),
        (["--split", "tanp"], False),
    ],
)
def test_seed_with_the_tanp_split_is_reported_as_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture, arguments: list[str], warned: bool
) -> None:
    missing = tmp_path / "no-data-here"
    with caplog.at_level("WARNING", logger="tanp-train"):
        status = main(["prepare", "--data", str(missing), *arguments, "--out", str(tmp_path)])
    assert status == 2  # the data is missing: the run stops after the option check
    ignored = [record for record in caplog.records if "--seed 3 is ignored" in record.message]
    assert bool(ignored) == warned
