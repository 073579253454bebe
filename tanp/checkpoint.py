"""Run directory = one model version: `model.safetensors` (weights only) + `manifest.json`.

`save_checkpoint` writes both; `build_model` is the one loader every consumer uses: it verifies
the manifest, the weights' sha256, names, shapes and values, and the probe, and every refusal is
a `CheckpointError` naming the file, never another exception. No pickle anywhere.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tanp.config import TaNPConfig
from tanp.digest import sha256_hex
from tanp.model import TaNP
from tanp.scoring import Scorer, rank

FORMAT_VERSION = 2  # 2: item features, affinity module, support-only task state
WEIGHTS_FILE = "model.safetensors"
MANIFEST_FILE = "manifest.json"
PROBE_TOLERANCE = 1e-3  # loose enough for CPU vs GPU kernels


class CheckpointError(Exception):
    """A run directory that cannot be loaded; the message says which file and why."""


@dataclass(frozen=True)
class LoadedModel:
    """A verified model ready for scoring, with what its manifest says about it."""

    model: TaNP
    scorer: Scorer
    manifest: dict[str, Any]
    run_dir: Path
    items: list[str]
    item_names: list[str] | None
    item_urls: list[str] | None

    @property
    def device(self) -> torch.device:
        return self.scorer.device


# the name tests/app imports; the service side moves to tanp.digest.sha256_hex (issue 23)
sha256_file = sha256_hex


def make_probe(model: TaNP, *, top: int = 10) -> dict[str, Any]:
    """A fixed support set (3 most popular items liked, the least popular disliked) and the
    top scores it gets; checked again at every load (warm-up and corruption check)."""
    by_popularity = rank(model.item_popularity.detach().cpu().numpy())
    liked = [int(index) for index in by_popularity[:3]]
    disliked = [int(by_popularity[-1])]
    items = liked + [index for index in disliked if index not in liked]
    labels = [model.config.label_max] * len(liked) + [model.config.label_min] * (
        len(items) - len(liked)
    )
    scorer = Scorer(model)
    scores = scorer.scores(scorer.encode_one(items, labels))[0].cpu().numpy()
    best = rank(scores, k=top, exclude=items)
    return {
        "support_indices": items,
        "support_labels": labels,
        "top_indices": [int(index) for index in best],
        "top_scores": [float(scores[index]) for index in best],
    }


@dataclass(frozen=True)
class Probe:
    """The manifest's probe, checked: a support set and the scores its top items must get."""

    support_indices: list[int]
    support_labels: list[float]
    top_indices: list[int]
    top_scores: list[float]


def read_probe(value: object, *, num_items: int) -> Probe:
    """The manifest's `probe` entry as a Probe; ValueError saying what is wrong with it."""
    if not isinstance(value, dict):
        raise ValueError(f"probe is {type(value).__name__}, not an object")
    support = _indices(value.get("support_indices"), what="probe support_indices", end=num_items)
    top = _indices(value.get("top_indices"), what="probe top_indices", end=num_items)
    labels = _numbers(value.get("support_labels"), what="probe support_labels", count=len(support))
    scores = _numbers(value.get("top_scores"), what="probe top_scores", count=len(top))
    return Probe(support, labels, top, scores)


def check_probe(scorer: Scorer, probe: Probe) -> float:
    """Largest absolute score difference on the probe's expected top items; ValueError when
    the model's scores for the probe's support set are not all finite."""
    state = scorer.encode_one(probe.support_indices, probe.support_labels)
    scores = scorer.scores(state)[0]  # (N,)
    if not bool(torch.isfinite(scores).all()):
        raise ValueError("the model's probe scores are not finite (NaN or infinity)")
    got = scores.cpu().numpy()[probe.top_indices].tolist()
    return max((abs(a - b) for a, b in zip(got, probe.top_scores, strict=True)), default=0.0)


def _indices(value: object, *, what: str, end: int) -> list[int]:
    if not isinstance(value, list) or not all(
        isinstance(index, int) and not isinstance(index, bool) for index in value
    ):
        raise ValueError(f"{what} is not a list of integers")
    if any(not 0 <= index < end for index in value):
        raise ValueError(f"{what} has indices outside [0, {end})")
    return list(value)


def _numbers(value: object, *, what: str, count: int) -> list[float]:
    if not isinstance(value, list) or len(value) != count:
        raise ValueError(f"{what} is not a list of {count} numbers")
    numbers: list[float] = []
    for number in value:
        if isinstance(number, bool) or not isinstance(number, int | float):
            raise ValueError(f"{what} is not a list of {count} numbers")
        if not math.isfinite(number):
            raise ValueError(f"{what} holds a non-finite number")
        numbers.append(float(number))
    return numbers


def save_checkpoint(
    run_dir: Path,
    *,
    model: TaNP,
    items: list[str],
    version: str,
    item_names: list[str] | None = None,
    item_urls: list[str] | None = None,
    train_config: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
    metrics: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Write weights and manifest into run_dir; returns the manifest.

    `version` is written for readers of the manifest (SPEC section 5); loading never reads it.
    `item_names` and `item_urls` (one web page per item, "" where unknown) are optional and in
    the order of `items`; an absent list is stored as null.
    """
    for what, values in (("item ids", items), ("item urls", item_urls)):
        if values is not None and len(values) != model.config.num_items:
            raise ValueError(
                f"{len(values)} {what} for a model with {model.config.num_items} items"
            )
    run_dir.mkdir(parents=True, exist_ok=True)
    weights_path = run_dir / WEIGHTS_FILE
    state = {
        name: tensor.detach().cpu().contiguous() for name, tensor in model.state_dict().items()
    }
    save_file(state, str(weights_path), metadata={"format_version": str(FORMAT_VERSION)})
    manifest: dict[str, Any] = {
        "format_version": FORMAT_VERSION,
        "version": version,
        "created_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "model_config": model.config.to_dict(),
        "train_config": train_config or {},
        "data": data or {},
        "items": list(items),
        "item_names": list(item_names) if item_names is not None else None,
        "item_urls": list(item_urls) if item_urls is not None else None,
        "weights_file": WEIGHTS_FILE,
        "weights_sha256": sha256_hex(weights_path),
        "torch_version": torch.__version__,
        "metrics": metrics or {},
        "probe": make_probe(model),
    }
    write_manifest(run_dir, manifest)
    return manifest


def write_manifest(run_dir: Path, manifest: dict[str, Any]) -> None:
    path = run_dir / MANIFEST_FILE
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(
        json.dumps(manifest, indent=1, ensure_ascii=False) + "\n", encoding="utf-8"
    )
    temporary.replace(path)


def read_manifest(run_dir: Path) -> dict[str, Any]:
    path = run_dir / MANIFEST_FILE
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as error:
        raise CheckpointError(f"{path}: no manifest (is this a run directory?)") from error
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CheckpointError(f"{path}: unreadable manifest: {error}") from error
    except ValueError as error:  # an integer of more digits than Python converts
        raise CheckpointError(f"{path}: unreadable manifest: {error}") from error
    except RecursionError as error:
        raise CheckpointError(f"{path}: unreadable manifest: nested too deep") from error
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{path}: manifest is not a JSON object")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {version!r} is not supported "
            f"(this code reads {FORMAT_VERSION})"
        )
    for key in ("model_config", "items", "weights_sha256", "probe"):
        if key not in manifest:
            raise CheckpointError(f"{path}: manifest lacks {key!r}")
    return manifest


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else as torch understands it."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def build_model(run_dir: Path | str, device: str | torch.device = "cpu") -> LoadedModel:
    """Load and verify a run directory; every refusal is a CheckpointError naming the file.

    Checked, in order: the manifest's format and fields (item ids unique, texts valid UTF-8,
    one name and URL per item, the probe's indices inside the catalog); the weights' sha256;
    that model_config builds a model (on the meta device, so no memory is spent on a bad one)
    whose tensors have exactly the file's names and shapes; every floating tensor finite and
    every integer tensor named `*_index` within [0, num_items); then the probe: finite scores
    that match the manifest's within PROBE_TOLERANCE.
    """
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    where = run_dir / MANIFEST_FILE
    weights_path = run_dir / WEIGHTS_FILE
    config = _config(manifest["model_config"], where=where)
    try:
        items = _texts(manifest["items"], what="items", count=config.num_items)
        if len(set(items)) != len(items):
            raise ValueError("items holds duplicate ids")
        names = _optional_texts(manifest.get("item_names"), what="item_names", count=len(items))
        urls = _optional_texts(manifest.get("item_urls"), what="item_urls", count=len(items))
        probe = read_probe(manifest["probe"], num_items=config.num_items)
    except ValueError as error:
        raise CheckpointError(f"{where}: {error}") from error
    state = _verified_weights(weights_path, sha256=manifest["weights_sha256"], config=config)
    model = TaNP(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()
        detail = " ".join(line.strip() for line in first_line[:3])
        raise CheckpointError(
            f"{weights_path}: weights do not fit model_config: {detail}"
        ) from error
    model.to(resolve_device(device))
    try:
        scorer = Scorer(model)
        difference = check_probe(scorer, probe)
    except Exception as error:  # whatever the model raises on its own probe is a refusal
        raise CheckpointError(
            f"{run_dir}: the model fails its probe: {type(error).__name__}: {error}"
        ) from error
    if not math.isfinite(difference) or difference > PROBE_TOLERANCE:
        raise CheckpointError(
            f"{run_dir}: probe scores differ by {difference:.3g} from the manifest's "
            "(weights and manifest disagree)"
        )
    return LoadedModel(
        model=model,
        scorer=scorer,
        manifest=manifest,
        run_dir=run_dir,
        items=items,
        item_names=names,
        item_urls=urls,
    )


def _verified_weights(
    weights_path: Path, *, sha256: object, config: TaNPConfig
) -> dict[str, torch.Tensor]:
    """The weights file's tensors once its sha256 matches the manifest's and its names,
    shapes and values fit `config`; a CheckpointError naming the file otherwise."""
    where = weights_path.parent / MANIFEST_FILE
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path}: weights file missing")
    try:
        digest = sha256_hex(weights_path)
    except OSError as error:  # e.g. mode 0600 from a trainer running as another user
        raise CheckpointError(f"{weights_path}: weights file unreadable: {error}") from error
    if digest != sha256:
        raise CheckpointError(
            f"{weights_path}: sha256 {digest[:12]}... does not match the manifest's "
            f"{str(sha256)[:12]}... (corrupt or replaced weights)"
        )
    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError) as error:
        raise CheckpointError(
            f"{weights_path}: not a readable safetensors file: {error}"
        ) from error
    try:
        skeleton = _skeleton(config)
    except ValueError as error:
        raise CheckpointError(f"{where}: bad model_config: {error}") from error
    try:
        _check_shapes(skeleton, state)
    except ValueError as error:
        raise CheckpointError(
            f"{weights_path}: weights do not fit model_config: {error}"
        ) from error
    try:
        _check_values(state, num_items=config.num_items)
    except ValueError as error:
        raise CheckpointError(f"{weights_path}: {error}") from error
    return state


def _config(value: object, *, where: Path) -> TaNPConfig:
    if not isinstance(value, dict):
        raise CheckpointError(f"{where}: bad model_config: not an object")
    try:
        return TaNPConfig.from_dict(value)
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{where}: bad model_config: {error}") from error


def _skeleton(config: TaNPConfig) -> TaNP:
    """The model `config` describes, on the meta device (shapes only, nothing allocated);
    ValueError when the config builds none (negative or non-integer dimensions, ...)."""
    try:
        with torch.device("meta"):
            return TaNP(config)
    except Exception as error:  # whatever a nonsensical config makes the constructor raise
        raise ValueError(f"it builds no model: {type(error).__name__}: {error}") from error


def _check_shapes(skeleton: TaNP, state: dict[str, torch.Tensor]) -> None:
    expected = {name: tuple(tensor.shape) for name, tensor in skeleton.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    wrong = [
        f"{name} is {tuple(state[name].shape)}, model_config wants {shape}"
        for name, shape in expected.items()
        if name in state and tuple(state[name].shape) != shape
    ]
    problems = (
        ([f"missing {', '.join(missing[:5])}"] if missing else [])
        + ([f"unexpected {', '.join(unexpected[:5])}"] if unexpected else [])
        + wrong[:3]
    )
    if problems:
        raise ValueError("; ".join(problems))


def _check_values(state: dict[str, torch.Tensor], *, num_items: int) -> None:
    """Every floating tensor finite; every integer tensor named `*_index` (item indices, e.g.
    neighbour lists) within [0, num_items). Written over names, not one model's buffers."""
    for name, tensor in state.items():
        if tensor.is_floating_point():
            if not bool(torch.isfinite(tensor).all()):
                raise ValueError(f"tensor {name!r} holds non-finite values (NaN or infinity)")
        elif name.endswith("_index") and tensor.numel() and tensor.dtype != torch.bool:
            low, high = int(tensor.min()), int(tensor.max())
            if low < 0 or high >= num_items:
                raise ValueError(
                    f"tensor {name!r} holds item indices {low}..{high}, outside [0, {num_items})"
                )


def _texts(value: object, *, what: str, count: int) -> list[str]:
    """A list of `count` ids or names (strings; integers are read as their decimal text)."""
    if not isinstance(value, list) or len(value) != count:
        length = f"{len(value)} entries" if isinstance(value, list) else type(value).__name__
        raise ValueError(f"{what} is not a list of {count} entries ({length})")
    texts: list[str] = []
    for entry in value:
        if isinstance(entry, bool) or not isinstance(entry, str | int):
            raise ValueError(f"{what} holds {type(entry).__name__} entries, not strings")
        text = str(entry)
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as error:
            raise ValueError(f"{what} holds text that is not valid UTF-8: {text!r}") from error
        texts.append(text)
    return texts


def _optional_texts(value: object, *, what: str, count: int) -> list[str] | None:
    """`item_names` / `item_urls`: None when absent (older manifests) or null; "" for a null
    entry; else as `_texts`."""
    if value is None:
        return None
    if isinstance(value, list):
        value = ["" if entry is None else entry for entry in value]
    return _texts(value, what=what, count=count)
