"""The training loop, configuration and checkpoints."""

from aswl.train.callbacks import Callback
from aswl.train.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from aswl.train.config import Config, DataConfig, load_config
from aswl.train.data_loop import evaluate
from aswl.train.dist import TrainingError
from aswl.train.loop import Trainer, train

__all__ = ["Callback", "CheckpointError", "Config", "DataConfig", "Trainer", "TrainingError",
           "evaluate", "load_checkpoint", "load_config", "save_checkpoint", "train"]
