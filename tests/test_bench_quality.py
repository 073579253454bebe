"""bench/quality.py from saved runs: the cold-start and uncertainty tables pooled over runs, and a
reference model's rows paired per user."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_the_bench_pools_saved_runs_and_compares_a_reference(
    trained_run: Path, synthetic_csv: Path, tmp_path: Path
) -> None:
    out = tmp_path / "quality.json"
    # a reference run written by older code (no per_user.npz): its model is re-scored
    reference = tmp_path / "reference" / "old-run"
    shutil.copytree(trained_run, reference)
    (reference / "per_user.npz").unlink()
    # the same run twice is one split with two "seeds" of identical values
    finished = subprocess.run(
        [
            sys.executable,
            str(ROOT / "bench" / "quality.py"),
            "--runs",
            str(trained_run),
            str(trained_run),
            "--reference",
            str(reference.parent),
            "--data",
            str(synthetic_csv),
            "--json",
            str(out),
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=ROOT,
    )
    assert finished.returncode == 0, finished.stdout + finished.stderr
    assert "2 training seeds per split" in finished.stdout
    assert "no per_user.npz, re-scoring its model" in finished.stdout
    report = json.loads(out.read_text())
    metrics = json.loads((trained_run / "metrics.json").read_text())
    cold = report["cold_start"]
    assert cold["sizes"] == [1, 3, 5, 10, 20]
    assert set(cold["rows"]) >= {"tanp", "mean_task", "knn_pop", "rp3beta", "item_knn"}
    for size in ("1", "10"):
        ndcg, recall = cold["rows"]["knn_pop"]["mean"][size]
        expected = metrics["cold_start"]["scorers"]["knn_pop"][size]
        assert ndcg == pytest.approx(expected["NDCG@5"])
        assert recall == pytest.approx(expected["Recall@20"])
        difference = cold["rows"]["rp3beta"]["difference"]["NDCG@5"][size]
        assert difference["low"] <= difference["mean"] <= difference["high"]
    with np.load(trained_run / "per_user.npz") as arrays:
        users = arrays["users"].size
    assert report["uncertainty"]["sizes"] == [1, 3, 5, 10, 20]
    assert report["uncertainty"]["shrink_fraction"]["value"] == pytest.approx(
        metrics["uncertainty"]["shrink_fraction"]["value"]
    )
    assert users > 0
    # the re-scored reference is the same model: every paired difference is exactly 0
    rows = report["reference"]["rows"]
    assert set(rows) == {"test (full support)", "n = 1", "n = 3", "n = 5", "n = 10", "n = 20"}
    for row in rows.values():
        assert row["NDCG@5"]["mean"] == 0.0 and row["NDCG@5"]["verdict"] == "tie"
