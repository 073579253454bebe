"""Run directory round trip and every refusal of a damaged checkpoint."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from tanp.checkpoint import (
    FORMAT_VERSION,
    CheckpointError,
    build_model,
    read_manifest,
    save_checkpoint,
)
from tanp.config import TaNPConfig
from tanp.digest import sha256_hex
from tanp.model import TaNP
from training.data import load_interactions
from training.episodes import random_split
from training.evaluate import tanp_scores


def _copy(run: Path, tmp_path: Path) -> Path:
    target = tmp_path / run.name
    shutil.copytree(run, target)
    return target


def test_train_save_load_gives_identical_scores(trained_run: Path, synthetic_csv: Path) -> None:
    """train 2 epochs -> save -> build_model -> the same scores as the metrics were computed on."""
    manifest = json.loads((trained_run / "manifest.json").read_text())
    assert manifest["format_version"] == FORMAT_VERSION
    assert manifest["weights_sha256"] == sha256_hex(trained_run / "model.safetensors")
    assert {"model_config", "train_config", "data", "items", "probe", "metrics"} <= set(manifest)
    loaded = build_model(trained_run, "cpu")
    prepared = random_split(load_interactions(synthetic_csv), seed=1)
    episodes = prepared.episodes["test"]
    reloaded = build_model(trained_run, "cpu")
    first = tanp_scores(loaded.model, episodes)
    second = tanp_scores(reloaded.model, episodes)
    assert first.shape == (len(episodes), len(prepared.interactions.item_ids))
    assert (first == second).all()
    metrics = json.loads((trained_run / "metrics.json").read_text())
    assert manifest["metrics"] == metrics["test"]


def test_flipped_byte_is_refused(trained_run: Path, tmp_path: Path) -> None:
    run = _copy(trained_run, tmp_path)
    weights = run / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 0x01
    weights.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match="sha256"):
        build_model(run)


def test_wrong_shapes_are_refused_even_with_a_matching_hash(
    trained_run: Path, tmp_path: Path
) -> None:
    run = _copy(trained_run, tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    other = TaNP(TaNPConfig.from_dict({**manifest["model_config"], "dec_h1_dim": 7}))
    save_file(
        {k: v.contiguous() for k, v in other.state_dict().items()}, str(run / "model.safetensors")
    )
    manifest["weights_sha256"] = sha256_hex(run / "model.safetensors")
    (run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="do not fit model_config"):
        build_model(run)


def test_unknown_format_version_is_refused(trained_run: Path, tmp_path: Path) -> None:
    run = _copy(trained_run, tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["format_version"] = 99
    (run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="format_version 99"):
        build_model(run)


def test_missing_and_garbled_manifests_are_refused(trained_run: Path, tmp_path: Path) -> None:
    run = _copy(trained_run, tmp_path)
    (run / "manifest.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="unreadable manifest"):
        build_model(run)
    (run / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="no manifest"):
        build_model(run)


def test_probe_mismatch_is_refused(trained_run: Path, tmp_path: Path) -> None:
    run = _copy(trained_run, tmp_path)
    manifest = json.loads((run / "manifest.json").read_text())
    manifest["probe"]["top_scores"] = [score + 1.0 for score in manifest["probe"]["top_scores"]]
    (run / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="probe"):
        build_model(run)


def test_weights_are_plain_tensors_without_pickle(trained_run: Path) -> None:
    tensors = load_file(str(trained_run / "model.safetensors"))
    assert all(isinstance(value, torch.Tensor) for value in tensors.values())
    assert "item_popularity" in tensors


def test_save_refuses_mismatched_item_list(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="item ids"):
        save_checkpoint(
            tmp_path / "x", model=TaNP(TaNPConfig(num_items=3)), items=["a"], version="x"
        )


def test_item_urls_round_trip_and_older_manifests_have_none(tmp_path: Path) -> None:
    model = TaNP(TaNPConfig(num_items=3))
    urls = ["http://www.last.fm/music/a", "", "http://www.last.fm/music/c"]
    manifest = save_checkpoint(
        tmp_path / "new", model=model, items=["a", "b", "c"], version="new", item_urls=urls
    )
    assert manifest["item_urls"] == urls
    assert build_model(tmp_path / "new").item_urls == urls

    save_checkpoint(tmp_path / "old", model=model, items=["a", "b", "c"], version="old")
    assert json.loads((tmp_path / "old" / "manifest.json").read_text())["item_urls"] is None
    older = json.loads((tmp_path / "old" / "manifest.json").read_text())
    del older["item_urls"]  # manifests written before the field existed
    (tmp_path / "old" / "manifest.json").write_text(json.dumps(older))
    assert build_model(tmp_path / "old").item_urls is None


def test_item_urls_of_the_wrong_length_are_refused(tmp_path: Path) -> None:
    model = TaNP(TaNPConfig(num_items=3))
    with pytest.raises(ValueError, match="item urls"):
        save_checkpoint(tmp_path / "x", model=model, items=["a", "b", "c"], version="x",
                        item_urls=["u"])  # fmt: skip
    save_checkpoint(tmp_path / "y", model=model, items=["a", "b", "c"], version="y")
    manifest = json.loads((tmp_path / "y" / "manifest.json").read_text())
    manifest["item_urls"] = ["u"]
    (tmp_path / "y" / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="item_urls is not a list of 3 entries"):
        build_model(tmp_path / "y")


@pytest.mark.gpu
def test_cuda_scores_match_cpu(trained_run: Path) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device on this machine")
    cpu = build_model(trained_run, "cpu")
    cuda = build_model(trained_run, "cuda")
    assert cuda.device.type == "cuda"
    support = ([0, 1, 2], [1.0, 0.0, 1.0])
    expected = cpu.scorer.scores(cpu.scorer.encode_one(*support))
    got = cuda.scorer.scores(cuda.scorer.encode_one(*support)).cpu()
    torch.testing.assert_close(got, expected, atol=1e-4, rtol=1e-4)


# --- every damaged manifest or weights file is a CheckpointError, never another exception ---

NEIGHBOURS = 4


@pytest.fixture
def small_run(tmp_path: Path) -> Path:
    """A 12-item model with a neighbour index, saved untrained (fast, and every buffer used)."""
    torch.manual_seed(0)
    model = TaNP(TaNPConfig(num_items=12, neighbours=NEIGHBOURS))
    model.affinity.set_neighbours(
        torch.randint(0, 12, (12, NEIGHBOURS)), torch.rand(12, NEIGHBOURS)
    )
    model.item_popularity.copy_(torch.arange(12, 0, -1, dtype=torch.float32))
    names = [f"name {index}" for index in range(12)]
    save_checkpoint(
        tmp_path / "run", model=model, items=[str(i) for i in range(12)], item_names=names,
        version="run",
    )  # fmt: skip
    return tmp_path / "run"


def _edit_manifest(run: Path, **changes: object) -> None:
    manifest = json.loads((run / "manifest.json").read_text())
    for key, value in changes.items():
        if "." in key:
            outer, inner = key.split(".", 1)
            manifest[outer][inner] = value
        else:
            manifest[key] = value
    # allow_nan: Python's json reads NaN back, so a manifest can hold one
    (run / "manifest.json").write_text(json.dumps(manifest, allow_nan=True))


def _edit_weights(run: Path, name: str, change: object) -> None:
    """Rewrite one tensor and the manifest's sha256, as an honest-looking corruption would."""
    tensors = load_file(str(run / "model.safetensors"))
    tensor = tensors[name].clone()
    assert callable(change)
    change(tensor)
    tensors[name] = tensor
    save_file(tensors, str(run / "model.safetensors"))
    _edit_manifest(run, weights_sha256=sha256_hex(run / "model.safetensors"))


CORRUPT_MANIFESTS: list[tuple[dict[str, object], str]] = [
    ({"items": 5}, "items"),
    ({"items": "0123456789ab"}, "items"),
    ({"items": [str(i) for i in range(11)] + ["0"]}, "duplicate"),
    ({"items": [str(i) for i in range(11)] + [None]}, "items"),
    ({"items": [str(i) for i in range(11)] + ["\ud800"]}, "UTF-8"),
    ({"item_names": 5}, "item_names"),
    ({"item_names": ["x"]}, "item_names"),
    ({"item_names": ["x"] * 11 + [{"a": 1}]}, "item_names"),
    ({"item_urls": ["u"] * 11 + ["\udfff"]}, "UTF-8"),
    ({"probe": {}}, "probe"),
    ({"probe": 5}, "probe"),
    ({"probe.support_indices": [0, 1, 10**6]}, "probe"),
    ({"probe.support_indices": [0, 1, -1]}, "probe"),
    ({"probe.support_indices": [0, 1, 2.5]}, "probe"),
    ({"probe.support_indices": "012"}, "probe"),
    ({"probe.support_labels": [1.0]}, "probe"),
    ({"probe.support_labels": [1.0, 1.0, float("nan"), 0.0]}, "probe"),
    ({"probe.top_indices": [10**9] * 10}, "probe"),
    ({"probe.top_scores": [float("nan")] * 10}, "probe"),
    ({"probe.top_scores": [0.5]}, "probe"),
    ({"model_config": 5}, "model_config"),
    ({"model_config": None}, "model_config"),
    ({"model_config.z_dim": -3}, "model_config"),
    ({"model_config.dec_h1_dim": "128"}, "model_config"),
    ({"model_config.dec_h1_dim": 10**12}, "model_config"),
    ({"model_config.num_items": 0}, "model_config"),
    ({"model_config.colour": "blue"}, "model_config"),
    ({"weights_sha256": 5}, "sha256"),
    ({"weights_sha256": None}, "sha256"),
    # issue 21 item 4: types a manifest's JSON can hold but the model cannot use
    ({"model_config.temperature": "1.0"}, "temperature"),
    ({"model_config.affinity_scale": "2"}, "affinity_scale"),
    ({"model_config.label_max": "1"}, "label_max"),
    ({"model_config.label_max": [1]}, "label_max"),
    ({"model_config.temperature": float("nan")}, "temperature"),
    ({"model_config.taste_head": "yes"}, "taste_head"),
    ({"model_config.z_dim": True}, "z_dim"),
    ({"model_config.decoder": "transformer"}, "decoder"),
    ({"model_config.user_input": "everyone"}, "user_input"),
]


def _write_raw_manifest(run: Path, old: str, new: str) -> None:
    text = (run / "manifest.json").read_text()
    assert old in text
    (run / "manifest.json").write_text(text.replace(old, new, 1))


@pytest.mark.parametrize(
    ("old", "new", "fragment"),
    [
        ('"num_items": 12', '"num_items": ' + "9" * 5_000, "unreadable manifest"),
        ('"metrics": {}', '"metrics": ' + "[" * 100_000 + "]" * 100_000, "nested too deep"),
    ],
    ids=["5000-digit-int", "nested-100000-deep"],
)
def test_manifests_json_cannot_convert_are_checkpoint_errors(
    small_run: Path, old: str, new: str, fragment: str
) -> None:
    """Issue 21 item 4: a 5,000-digit integer (ValueError) and a manifest nested 100,000 deep
    (RecursionError) escaped read_manifest."""
    _write_raw_manifest(small_run, old, new)
    with pytest.raises(CheckpointError, match=fragment):
        read_manifest(small_run)
    with pytest.raises(CheckpointError, match=fragment):
        build_model(small_run)


def test_unreadable_weights_are_a_checkpoint_error_whoever_runs_the_test(
    small_run: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Weights of mode 0600 written by the trainer as another uid (the API cannot read them);
    as root here, the denial is simulated where the hash opens the file."""
    import tanp.checkpoint as checkpoint

    def denied(path: Path) -> str:
        raise PermissionError(13, "Permission denied", str(path))

    monkeypatch.setattr(checkpoint, "sha256_hex", denied)
    with pytest.raises(CheckpointError, match="unreadable"):
        build_model(small_run)


@pytest.mark.parametrize(("changes", "fragment"), CORRUPT_MANIFESTS)
def test_a_corrupt_manifest_is_a_checkpoint_error(
    small_run: Path, changes: dict[str, object], fragment: str
) -> None:
    _edit_manifest(small_run, **changes)
    with pytest.raises(CheckpointError, match=fragment):
        build_model(small_run)


def _nan_at(position: int) -> object:
    def change(tensor: torch.Tensor) -> None:
        tensor.view(-1)[position] = float("nan")

    return change


def _set_at(position: int, value: float) -> object:
    def change(tensor: torch.Tensor) -> None:
        tensor.view(-1)[position] = value

    return change


@pytest.mark.parametrize(
    ("tensor", "change", "fragment"),
    [
        ("affinity.neighbour_weight", _nan_at(5), "non-finite"),
        ("item_popularity", _set_at(3, float("inf")), "non-finite"),
        ("decoder.output.weight", _set_at(0, float("-inf")), "non-finite"),
        ("affinity.neighbour_index", _set_at(7, 12), r"neighbour_index.*\[0, 12\)"),
        ("affinity.neighbour_index", _set_at(0, -1), r"neighbour_index.*\[0, 12\)"),
        ("affinity.neighbour_index", _set_at(3, 2**40), r"neighbour_index.*\[0, 12\)"),
    ],
)
def test_weights_that_pass_the_hash_but_break_invariants_are_refused(
    small_run: Path, tensor: str, change: object, fragment: str
) -> None:
    """One flipped bit plus a rewritten sha256 loads today and fails requests later."""
    _edit_weights(small_run, tensor, change)
    with pytest.raises(CheckpointError, match=fragment):
        build_model(small_run)


def test_a_model_whose_probe_scores_are_not_finite_is_refused(small_run: Path) -> None:
    # finite weights whose products overflow: every score becomes infinite or NaN
    _edit_weights(small_run, "decoder.output.bias", _set_at(0, 3e38))
    _edit_weights(small_run, "decoder.output.weight", lambda tensor: tensor.fill_(3e38))
    with pytest.raises(CheckpointError, match="not finite"):
        build_model(small_run)


def _as_written_before_issue_23(run: Path, **retired: object) -> None:
    """Rewrite run's model_config as code before issue 23 wrote it: the latent widths under
    their old names and the three retired options at their old defaults (or at `retired`)."""
    manifest = json.loads((run / "manifest.json").read_text())
    config = manifest["model_config"]
    config["z1_dim"] = config.pop("latent_encoder_dim")
    config["z2_dim"] = config.pop("latent_hidden_dim")
    config.update({"affinity_skip": False, "embedding_init_std": 0.0, "logvar_init": 0.0})
    config.update(retired)
    (run / "manifest.json").write_text(json.dumps(manifest))


def test_a_run_written_before_the_config_renames_loads_as_it_was(small_run: Path) -> None:
    before = build_model(small_run)
    _as_written_before_issue_23(small_run)
    manifest = json.loads((small_run / "manifest.json").read_text())
    del manifest["version"]  # written for readers, never read: not required either
    (small_run / "manifest.json").write_text(json.dumps(manifest))
    after = build_model(small_run)
    assert after.model.config == before.model.config
    support = ([0, 1, 2], [1.0, 0.0, 1.0])
    torch.testing.assert_close(
        after.scorer.scores(after.scorer.encode_one(*support)),
        before.scorer.scores(before.scorer.encode_one(*support)),
        rtol=0,
        atol=0,
    )


def test_a_run_that_set_a_retired_option_is_refused(small_run: Path) -> None:
    _as_written_before_issue_23(small_run, affinity_skip=True)
    with pytest.raises(CheckpointError, match=r"affinity_skip.*no longer has"):
        build_model(small_run)


def test_the_small_run_itself_loads(small_run: Path) -> None:
    loaded = build_model(small_run)
    assert loaded.items == [str(i) for i in range(12)]
    assert loaded.item_names is not None and loaded.item_names[3] == "name 3"
