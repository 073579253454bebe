"""How to train (`TrainConfig`) and the one table of named presets (model + training).

`reference` is the authors' notebook, `paper` (the default) the model this project reports and
serves, `demo` the same with fewer epochs for `make demo` (what each sets: docs/training.md).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any, Literal

from tanp.config import TaNPConfig

PointwiseLoss = Literal["mse", "bce"]
EpisodeSource = Literal["authors", "all_train_users"]
ClusteringTarget = Literal["dec", "reference"]


@dataclass(frozen=True)
class TrainConfig:
    """How to train; stored in the manifest. Defaults are the reference notebook's."""

    epochs: int = 150
    batch_size: int = 32
    lr: float = 1e-4
    weight_decay: float = 0.0
    seed: int = 2020
    patience: int = 0  # epochs without validation improvement before stopping; 0 = never
    # episodes: the split's train episodes (`authors`) or one per train user, redrawn each epoch
    episodes: EpisodeSource = "authors"
    support_size: int = 20  # support points per redrawn episode (at most half the user's)
    query_cap: int = 128  # labelled target points per episode and step: bounded cost per user
    min_interactions: int = 4  # train users with fewer interactions give no episode
    # item statistics of a training user's episode come from the other folds of train users
    # (0: from all train users, the user's own rows included: the self-leak of issue 12)
    folds: int = 0
    shrink: float = 10.0  # shrunk-cosine shrinkage of the neighbour lists
    factor_dim: int = 0  # item factors (truncated SVD of train users' positives)
    content_dim: int = 0  # content factors (LSA of train users' tags), 0 without tags
    # losses: pointwise on the labelled targets, listwise softmax of the positives against the
    # labelled targets and `negatives` catalog items drawn uniformly, KL, clustering
    pointwise_loss: PointwiseLoss = "mse"
    pointwise_weight: float = 1.0
    listwise_weight: float = 0.0
    negatives: int = 0
    kl_weight: float = 1.0
    lambda_clustering: float = 0.1
    clustering_target: ClusteringTarget = "dec"
    unknown_user_rate: float = 0.5
    eval_samples: int = 0
    # an epoch is eligible for selection only if its validation NDCG@5 beats the mean_task
    # ablation's (every user's z and task state replaced by the mean) by at least this much:
    # the selected model's task path is never inert (0: every epoch eligible)
    min_task_gain: float = 0.0

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def item_feature_dim(self) -> int:
        """Width of the fixed item features: factors + content + has-content + popularity."""
        if not (self.factor_dim or self.content_dim):
            return 0
        return self.factor_dim + self.content_dim + 2


REFERENCE_MODEL: dict[str, Any] = {}
PAPER_MODEL: dict[str, Any] = {
    "item_id_input": False,
    "enc_h1_dim": 64,
    "enc_h2_dim": 64,
    "latent_encoder_dim": 64,
    "latent_hidden_dim": 64,
    "z_dim": 32,
    "taskenc_h1_dim": 64,
    "taskenc_h2_dim": 64,
    "taskenc_final_dim": 32,
    "clusters_k": 7,
    "dec_h1_dim": 64,
    "dec_h2_dim": 64,
    "dec_h3_dim": 32,
    "film_gamma_offset": 1.0,
    "neighbours": 200,
    "affinity_scale": 10.0,
    "affinity_dropout": 0.5,
    "taste_head": True,
    "shortlist": True,
    "latent_aggregation": "bayesian",
}
PAPER_TRAIN: dict[str, Any] = {
    "epochs": 30,
    "lr": 3e-3,
    "patience": 10,
    "episodes": "all_train_users",
    "folds": 5,
    "factor_dim": 32,
    "content_dim": 32,
    "pointwise_loss": "bce",
    "pointwise_weight": 0.3,
    "listwise_weight": 1.0,
    "negatives": 256,
    "kl_weight": 0.1,
    "min_task_gain": 0.01,
}

PRESETS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "reference": (REFERENCE_MODEL, {}),
    "paper": (PAPER_MODEL, PAPER_TRAIN),
    "demo": (PAPER_MODEL, {**PAPER_TRAIN, "epochs": 8, "patience": 0}),
}
DEFAULT_PRESET = "paper"


def preset_configs(
    name: str,
    *,
    model: dict[str, Any] | None = None,
    train: dict[str, Any] | None = None,
) -> tuple[TaNPConfig, TrainConfig]:
    """The preset's model and training configs with overrides applied.

    The catalog, user and feature counts are placeholders: the trainer sets them from the data."""
    model_values, train_values = PRESETS[name]
    train_config = TrainConfig(**{**train_values, **(train or {})})
    model_config = TaNPConfig(
        num_items=1,
        num_users=1,
        **{"item_feature_dim": train_config.item_feature_dim, **model_values, **(model or {})},
    )
    return model_config, train_config
