"""TaNP core shared by training and serving: model, checkpoint format and the scoring path."""

from tanp.checkpoint import CheckpointError, LoadedModel, build_model, save_checkpoint
from tanp.config import TaNPConfig
from tanp.model import TaNP, TaNPOutput, TaskState
from tanp.scoring import Scorer, rank

__all__ = [
    "CheckpointError",
    "LoadedModel",
    "Scorer",
    "TaNP",
    "TaNPConfig",
    "TaNPOutput",
    "TaskState",
    "build_model",
    "rank",
    "save_checkpoint",
]
