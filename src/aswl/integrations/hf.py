"""Hugging Face ``transformers.Trainer``: ``Trainer(..., callbacks=[ASWLTrainerCallback(0.9)])``.

Needs ``transformers`` and ``accelerate`` (``pip install aswl[hf]``). When training begins the
callback attaches the method to the Trainer's model and hooks it onto the Trainer's optimiser
with :func:`aswl.sparsify` (the number of steps is the Trainer's ``max_steps``, counted in
optimiser steps, so gradient accumulation is accounted for); when training ends it sets the
final masks. ``callback.method.export()`` is then the plain sparse model.

Saving and resuming: while the method is attached, ``model.state_dict()`` holds the plain
pruned weights (pruned weights exactly zero, ties kept, the keys of a fresh model), so
``trainer.save_model(dir)`` / ``model.save_pretrained(dir)`` write the usual
``model.safetensors`` that ``from_pretrained(dir)`` loads as the pruned model. Each Trainer
checkpoint folder also gets ``aswl_state.pt`` (dense weights, masks, the method's parameters
and state); ``trainer.train(resume_from_checkpoint=...)`` restores it and continues
step-exactly. Keep that file in the checkpoint folder the Trainer wrote
(``output_dir/checkpoint-N``).
"""

from __future__ import annotations

import os
from typing import Any

import torch

from aswl.integrations._callback import SparsifyCallbackBase, to_plain_state
from aswl.methods import ConfigError

STATE_FILE = "aswl_state.pt"

try:
    from transformers import TrainerCallback
except ImportError as exc:
    raise ImportError("aswl.integrations.hf needs transformers: pip install aswl[hf]") from exc


class ASWLTrainerCallback(SparsifyCallbackBase, TrainerCallback):
    """Learn a sparse structure during ``Trainer.train()``.

    Args:
        target_sparsity: final fraction of zero weights (None: the method's default).
        method: a registered method name (default ``aswl``).
        total_steps: optimiser steps of the run; None: the Trainer's ``state.max_steps``.
        finalize: set the final masks when training ends (default True).
        **options: the method's config fields (e.g. ``exclude=["classifier"]``).
    """

    def on_train_begin(self, args: Any, state: Any, control: Any, model: Any = None,
                       optimizer: Any = None, **kwargs: Any) -> None:
        if self.method is None:
            if model is None or optimizer is None:
                raise ConfigError("ASWLTrainerCallback: the Trainer passed no model or "
                                  "optimizer to on_train_begin")
            self.start(model, optimizer, int(state.max_steps), bool(args.fp16))
            method = self.method

            def plain(module: Any, state_dict: dict, prefix: str, metadata: Any) -> None:
                to_plain_state(module, state_dict, prefix, method)

            self._save_hook = model.register_state_dict_post_hook(plain)
        if state.global_step > 0:  # resume_from_checkpoint: the Trainer restored its state
            path = os.path.join(args.output_dir, f"checkpoint-{state.global_step}", STATE_FILE)
            if not os.path.isfile(path):
                raise ConfigError(
                    f"resuming at step {state.global_step} but {path} does not exist: resume "
                    "from a checkpoint folder that a Trainer with ASWLTrainerCallback wrote, "
                    "under the same output_dir")
            self.restore(torch.load(path, map_location="cpu", weights_only=True))

    def on_save(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        folder = os.path.join(args.output_dir, f"checkpoint-{state.global_step}")
        if self.method is None or not args.should_save or not os.path.isdir(folder):
            return
        path = os.path.join(folder, STATE_FILE)
        torch.save(self.checkpoint_state(), path + ".tmp")
        os.replace(path + ".tmp", path)

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.finish()
