"""Run directory = one model version: `model.safetensors` (weights only) + `manifest.json`.

`save_checkpoint` writes both; `build_model` is the one loader every consumer uses: it checks
the format version, the weights' sha256, the tensor shapes and the manifest probe, and raises
`CheckpointError` with a clear message on any mismatch. No pickle anywhere.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from tanp.model import TaNP, TaNPConfig
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


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


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


def check_probe(scorer: Scorer, probe: dict[str, Any]) -> float:
    """Largest absolute score difference on the probe's expected top items."""
    state = scorer.encode_one(list(probe["support_indices"]), list(probe["support_labels"]))
    scores = scorer.scores(state)[0].cpu().numpy()
    expected = probe["top_scores"]
    got = [float(scores[index]) for index in probe["top_indices"]]
    return max((abs(a - b) for a, b in zip(got, expected, strict=True)), default=0.0)


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
        "weights_sha256": sha256_file(weights_path),
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
    if not isinstance(manifest, dict):
        raise CheckpointError(f"{path}: manifest is not a JSON object")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: format_version {version!r} is not supported "
            f"(this code reads {FORMAT_VERSION})"
        )
    for key in ("version", "model_config", "items", "weights_sha256", "probe"):
        if key not in manifest:
            raise CheckpointError(f"{path}: manifest lacks {key!r}")
    return manifest


def resolve_device(device: str | torch.device) -> torch.device:
    """'auto' -> cuda when available, else cpu; anything else as torch understands it."""
    if str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def build_model(
    run_dir: Path | str, device: str | torch.device = "cpu", *, check: bool = True
) -> LoadedModel:
    """Load and verify a run directory; raises CheckpointError on any mismatch."""
    run_dir = Path(run_dir)
    manifest = read_manifest(run_dir)
    weights_path = run_dir / WEIGHTS_FILE
    if not weights_path.is_file():
        raise CheckpointError(f"{weights_path}: weights file missing")
    digest = sha256_file(weights_path)
    if digest != manifest["weights_sha256"]:
        raise CheckpointError(
            f"{weights_path}: sha256 {digest[:12]}... does not match the manifest's "
            f"{str(manifest['weights_sha256'])[:12]}... (corrupt or replaced weights)"
        )
    try:
        config = TaNPConfig.from_dict(manifest["model_config"])
    except (TypeError, ValueError) as error:
        raise CheckpointError(f"{run_dir / MANIFEST_FILE}: bad model_config: {error}") from error
    items = [str(item) for item in manifest["items"]]
    if len(items) != config.num_items:
        raise CheckpointError(
            f"{run_dir / MANIFEST_FILE}: {len(items)} item ids but num_items={config.num_items}"
        )
    target = resolve_device(device)
    try:
        state = load_file(str(weights_path), device="cpu")
    except (SafetensorError, OSError) as error:
        raise CheckpointError(
            f"{weights_path}: not a readable safetensors file: {error}"
        ) from error
    model = TaNP(config)
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as error:
        first_line = str(error).strip().splitlines()
        detail = " ".join(line.strip() for line in first_line[:3])
        raise CheckpointError(
            f"{weights_path}: weights do not fit model_config: {detail}"
        ) from error
    model.to(target)
    scorer = Scorer(model)
    if check:
        difference = check_probe(scorer, manifest["probe"])
        if not math.isfinite(difference) or difference > PROBE_TOLERANCE:
            raise CheckpointError(
                f"{run_dir}: probe scores differ by {difference:.3g} from the manifest's "
                "(weights and manifest disagree)"
            )
    names = manifest.get("item_names")
    return LoadedModel(
        model=model,
        scorer=scorer,
        manifest=manifest,
        run_dir=run_dir,
        items=items,
        item_names=[str(name) for name in names] if names else None,
        item_urls=_item_urls(manifest, run_dir=run_dir, count=len(items)),
    )


def _item_urls(manifest: dict[str, Any], *, run_dir: Path, count: int) -> list[str] | None:
    """`item_urls` of the manifest: None when absent (older manifests) or null; "" for a null
    entry; refused unless it is a list with one entry per item."""
    urls = manifest.get("item_urls")
    if urls is None:
        return None
    if not isinstance(urls, list) or len(urls) != count:
        raise CheckpointError(
            f"{run_dir / MANIFEST_FILE}: item_urls is not a list of {count} entries"
        )
    return ["" if url is None else str(url) for url in urls]
