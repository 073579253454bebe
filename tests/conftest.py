"""Fixtures shared by every test package: synthetic data and a tiny trained run directory."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.synthetic import write_interactions_csv

# The test models are tiny: one intra-op thread is as fast, never spins against the other
# processes a test starts (servers, torchrun), and keeps each run on one float trajectory.
torch.set_num_threads(1)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that read a trained model are `trains` tests (Makefile: a scalar-kernel rerun)."""
    trained_fixtures = {"trained_run", "catalog_models_dir"}
    for item in items:
        if trained_fixtures & set(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.trains)


@pytest.fixture(scope="session")
def synthetic_csv(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_interactions_csv(tmp_path_factory.mktemp("data") / "interactions.csv")


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory: pytest.TempPathFactory, synthetic_csv: Path) -> Path:
    """`tanp-train train` for 2 epochs on synthetic data: a complete run directory."""
    from training.cli import main

    out = tmp_path_factory.mktemp("runs") / "synthetic-v1"
    status = main(
        [
            "train",
            "--data",
            str(synthetic_csv),
            "--split",
            "random",
            "--seed",
            "1",
            "--out",
            str(out),
            "--epochs",
            "2",
            "--batch-size",
            "8",
            "--quiet",
        ]
    )
    assert status == 0
    return out
