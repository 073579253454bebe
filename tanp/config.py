"""TaNPConfig: the architecture of one TaNP, stored verbatim in every checkpoint manifest.

`from_dict` reads a manifest's `model_config`, older manifests' renamed and retired fields included.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Literal, get_args

DecoderKind = Literal["film", "gating_film", "none"]
UserInput = Literal["none", "unknown"]
Aggregator = Literal["mean", "attention"]
LatentAggregation = Literal["mean", "bayesian"]

# Fields of older manifests: renamed ones (old -> new name), and retired options with the one
# value that changed nothing (what a model trained before their removal holds).
RENAMED_FIELDS = {"z1_dim": "latent_encoder_dim", "z2_dim": "latent_hidden_dim"}
RETIRED_OPTIONS: dict[str, object] = {
    "affinity_skip": False,
    "embedding_init_std": 0.0,
    "logvar_init": 0.0,
}


@dataclass(frozen=True)
class TaNPConfig:
    """Architecture of one TaNP; stored verbatim in every checkpoint manifest.

    Defaults are the reference notebook's hyper-parameters (the `reference` preset).
    `item_feature_dim` > 0: fixed item features (the `item_features` buffer, computed offline
    from train users only: item factors, content factors, popularity) are every point's input.
    `item_id_input`: a learned per-item id embedding as well (the reference's only input).
    `user_input="unknown"` keeps a user table whose last row is a shared unknown-user embedding.
    `film_gamma_offset` = 1 centres FiLM's scale at identity (gamma = 1 + tanh(W t)); the
    reference's 0 scales every hidden unit by ~tanh(0) at initialisation.
    `neighbours` = K > 0 stores each item's K most similar items and feeds the decoder their
    affinity to the support set (tanp.affinity); `affinity_dropout` hides it from a training
    episode with that probability, so z and the task path must learn the user's taste too.
    `taste_head`: the score gains (W z) . x_i, z read against the target's own features.
    `shortlist`: a bilinear first pass over the catalog (tanp.shortlist), fitted after training,
    so a big catalog's cold request decodes only its top items.
    `latent_aggregation="bayesian"`: every point gives Gaussian evidence about z, combined with
    a N(0, I) prior by precision, so q(z) narrows as points are added (the reference's `mean`
    averages point encodings, whose spread need not shrink).
    `latent_encoder_dim` is the width of the latent path's aggregated summary of the points,
    `latent_hidden_dim` the hidden layer that turns it into z's mean and log-variance.
    """

    num_items: int
    num_users: int = 0
    user_input: UserInput = "none"
    item_id_input: bool = True
    item_feature_dim: int = 0
    first_embedding_dim: int = 32
    second_embedding_dim: int = 16
    latent_encoder_dim: int = 32
    latent_hidden_dim: int = 32
    z_dim: int = 32
    enc_h1_dim: int = 64
    enc_h2_dim: int = 64
    taskenc_h1_dim: int = 128
    taskenc_h2_dim: int = 64
    taskenc_final_dim: int = 64
    clusters_k: int = 7
    temperature: float = 1.0
    dec_h1_dim: int = 128
    dec_h2_dim: int = 128
    dec_h3_dim: int = 128
    dropout_rate: float = 0.0
    decoder: DecoderKind = "film"
    aggregator: Aggregator = "mean"
    latent_aggregation: LatentAggregation = "mean"
    film_gamma_offset: float = 0.0
    neighbours: int = 0
    affinity_scale: float = 1.0
    affinity_dropout: float = 0.0
    taste_head: bool = False
    shortlist: bool = False
    label_min: float = 0.0
    label_max: float = 1.0

    def __post_init__(self) -> None:
        if self.num_items < 1:
            raise ValueError("num_items must be positive")
        for name in ("num_users", "item_feature_dim", "neighbours", "clusters_k", "z_dim"):
            if getattr(self, name) < 0:
                raise ValueError(f"{name} must not be negative")
        if self.user_input == "unknown" and self.num_users < 1:
            raise ValueError("user_input='unknown' needs num_users >= 1")
        if self.decoder not in ("film", "gating_film", "none"):
            raise ValueError(f"unknown decoder {self.decoder!r}")
        if self.aggregator not in ("mean", "attention"):
            raise ValueError(f"unknown aggregator {self.aggregator!r}")
        if self.latent_aggregation not in ("mean", "bayesian"):
            raise ValueError(f"unknown latent_aggregation {self.latent_aggregation!r}")
        if self.x_dim < 1:
            raise ValueError("a point needs an input: item_id_input, item_feature_dim or users")
        if not 0.0 <= self.affinity_dropout < 1.0:
            raise ValueError("affinity_dropout must be within [0, 1)")

    @property
    def x_dim(self) -> int:
        """Width of one point's input x: item embedding + user embedding + item features."""
        user = self.second_embedding_dim if self.user_input == "unknown" else 0
        item = self.second_embedding_dim if self.item_id_input else 0
        return item + user + self.item_feature_dim

    @property
    def unknown_user(self) -> int:
        """Row of the user table shared by every user not seen in training."""
        return self.num_users

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TaNPConfig:
        """The config a manifest holds; older manifests' renamed fields are read under their
        new names, and a retired option loads only at the value that changed nothing."""
        values = dict(values)
        for old, new in RENAMED_FIELDS.items():
            if old in values:
                if new in values:
                    raise ValueError(f"model_config holds both {old!r} and its new name {new!r}")
                values[new] = values.pop(old)
        for name, inert in RETIRED_OPTIONS.items():
            if name in values and values.pop(name) != inert:
                raise ValueError(
                    f"model_config sets {name!r}, an option this code no longer has (only "
                    f"{inert!r}, its old default, loads): train the model again"
                )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown model_config fields: {', '.join(unknown)}")
        for field in dataclasses.fields(cls):
            if field.name in values:
                _check_type(field.name, field.type, values[field.name])
        return cls(**values)


_LITERALS: dict[str, object] = {
    "DecoderKind": DecoderKind,
    "UserInput": UserInput,
    "Aggregator": Aggregator,
}
# Bounds of a model_config number: far above any real model, far below what would make
# building it (or printing it) hang.
MAX_CONFIG_INT = 10**9
MAX_CONFIG_FLOAT = 1e12


def _check_type(name: str, annotation: object, value: object) -> None:
    """`value` fits the field's annotation (a string, annotation, as `from __future__`
    leaves it): int fields take ints within +-MAX_CONFIG_INT, float fields ints or finite
    floats within +-MAX_CONFIG_FLOAT, bool fields bools, Literal fields one of their strings.
    ValueError naming the field otherwise (never a TypeError deep inside the model)."""
    kind = str(annotation)
    if kind == "bool":
        if not isinstance(value, bool):
            raise ValueError(f"model_config {name!r} must be true or false, not {value!r:.40}")
    elif kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"model_config {name!r} must be an integer, not {_shown(value)}")
        if abs(value) > MAX_CONFIG_INT:
            raise ValueError(f"model_config {name!r} is out of range")
    elif kind == "float":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ValueError(f"model_config {name!r} must be a number, not {_shown(value)}")
        if isinstance(value, int) and abs(value) > MAX_CONFIG_INT:
            raise ValueError(f"model_config {name!r} is out of range")
        if not math.isfinite(value) or abs(value) > MAX_CONFIG_FLOAT:
            raise ValueError(f"model_config {name!r} must be a finite number within range")
    elif not isinstance(value, str):
        raise ValueError(f"model_config {name!r} must be a string, not {_shown(value)}")
    elif kind in _LITERALS and value not in get_args(_LITERALS[kind]):
        raise ValueError(f"model_config {name!r} must be one of {get_args(_LITERALS[kind])}")


def _shown(value: object) -> str:
    """A value for an error message: its type, and the value itself when short."""
    text = repr(value) if isinstance(value, str | int | float) and len(repr(value)) < 40 else ""
    return f"{type(value).__name__} {text}".strip()
