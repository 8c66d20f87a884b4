"""The training loop, configuration, checkpoints, callbacks and the one step order
(:mod:`.step`).

The names below load on first use, so that importing :mod:`aswl.train.step` (what
``aswl.sparsify`` and ``aswl.training_step`` need) does not load the trainer and its
dependencies (yaml, the data and export modules).
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {"Callback": "callbacks", "CheckpointError": "checkpoint",
          "load_checkpoint": "checkpoint", "save_checkpoint": "checkpoint", "Config": "config",
          "DataConfig": "config", "load_config": "config", "evaluate": "data_loop",
          "TrainingError": "dist", "Trainer": "loop", "train": "loop"}

__all__ = ["Callback", "CheckpointError", "Config", "DataConfig", "Trainer", "TrainingError",
           "evaluate", "load_checkpoint", "load_config", "save_checkpoint", "train"]


def __getattr__(name: str) -> Any:
    if name in _WHERE:
        return getattr(importlib.import_module(f"aswl.train.{_WHERE[name]}"), name)
    raise AttributeError(f"module 'aswl.train' has no attribute {name!r}")
