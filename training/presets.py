"""Named training configurations: model architecture + training settings.

`reference` is the authors' notebook (train_TaNP.py defaults). `paper` is the default: the
reference architecture with the changes measured to help on validation users (README table).
`demo` is a quick configuration for `make demo`.
"""

from __future__ import annotations

from typing import Any

from tanp.model import PRESETS as MODEL_PRESETS

PRESETS: dict[str, tuple[dict[str, Any], dict[str, Any]]] = {
    "reference": (MODEL_PRESETS["reference"], {}),
    "train_sh": (MODEL_PRESETS["train_sh"], {"epochs": 100, "lambda_clustering": 1.0}),
    "paper": (MODEL_PRESETS["reference"], {"epochs": 150, "lr": 1e-3, "patience": 40}),
    "demo": (MODEL_PRESETS["reference"], {"epochs": 30, "lr": 1e-3}),
}
DEFAULT_PRESET = "paper"
