"""`tanp-train`: prepare then train from the episodes, bad data in one line, options that would
otherwise do nothing say so."""

from __future__ import annotations

import json
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


@pytest.mark.trains
def test_cli_prepare_then_train_from_prep(tmp_path: Path, synthetic_csv: Path) -> None:
    prep = tmp_path / "prep"
    assert (
        main(["prepare", "--data", str(synthetic_csv), "--split", "random", "--out", str(prep)])
        == 0
    )
    out = tmp_path / "run"
    status = main(["train", "--prep", str(prep), "--out", str(out), "--epochs", "1", "--quiet"])
    assert status == 0
    result = tmp_path / "eval.json"
    assert main(["evaluate", "--run", str(out), "--data", str(synthetic_csv), "--split", "random",
                 "--out", str(result)]) == 0  # fmt: skip
    evaluated = json.loads(result.read_text())
    assert "test" in evaluated and set(evaluated["ablations"]) == {"mean_task", "shuffled_task"}


def test_cli_reports_bad_data_in_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = tmp_path / "bad.csv"
    bad.write_text("user,item,rating\n1,2,zzz\n")
    status = main(["train", "--data", str(bad), "--split", "random", "--out", str(tmp_path / "r")])
    error = capsys.readouterr().err.strip()
    assert status == 2
    assert error.count("\n") == 0 and "bad.csv:2" in error
