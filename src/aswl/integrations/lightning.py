"""PyTorch Lightning: ``trainer = L.Trainer(callbacks=[ASWLCallback(target_sparsity=0.9)])``.

Needs ``lightning`` (``pip install aswl[lightning]``). At the start of ``fit`` the callback
attaches the method to the LightningModule and hooks it onto the module's optimiser with
:func:`aswl.sparsify` (so it does exactly what the explicit loop does; the number of steps is
``trainer.estimated_stepping_batches``); at the end of ``fit`` it sets the final masks.
``callback.method.export()`` is then the plain sparse model.

Checkpoints: the checkpoint's ``state_dict`` holds the plain pruned weights (pruned weights
exactly zero, the keys of a fresh model), so ``Model.load_from_checkpoint(path)`` gives the
pruned model and ``strict_loading`` stays on. The callback's own state holds what resuming
needs (dense weights, masks, the method's parameters and state); ``trainer.fit(model,
ckpt_path=path)`` with a fresh model and callback continues step-exactly where the checkpoint
was written.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from aswl.integrations._callback import SparsifyCallbackBase, to_plain_state
from aswl.methods import ConfigError

try:
    from lightning.pytorch.callbacks import Callback
except ImportError:  # the older package name
    try:
        from pytorch_lightning.callbacks import Callback
    except ImportError as exc:
        raise ImportError("aswl.integrations.lightning needs Lightning: "
                          "pip install aswl[lightning]") from exc


class ASWLCallback(SparsifyCallbackBase, Callback):
    """Learn a sparse structure during ``Trainer.fit``; one optimiser, automatic or manual.

    Args:
        target_sparsity: final fraction of zero weights (None: the method's default).
        method: a registered method name (default ``aswl``; ``aswl methods`` lists them).
        total_steps: optimiser steps of the run; None: ``trainer.estimated_stepping_batches``.
        finalize: set the final masks at the end of ``fit`` (default True).
        **options: the method's config fields (e.g. ``include=["features.*"]``).
    """

    def on_fit_start(self, trainer: Any, pl_module: nn.Module) -> None:
        if self.method is not None:
            return  # a second fit() continues with the same method
        optimizers = list(trainer.optimizers)
        if len(optimizers) != 1:
            raise ConfigError(f"ASWLCallback needs exactly one optimizer, the module configured "
                              f"{len(optimizers)}")
        # precision="16-mixed" keeps its float16 GradScaler on the precision plugin
        scaler = getattr(trainer.precision_plugin, "scaler", None)
        self.start(pl_module, optimizers[0], int(trainer.estimated_stepping_batches), scaler)

    def on_fit_end(self, trainer: Any, pl_module: nn.Module) -> None:
        self.finish()

    def on_save_checkpoint(self, trainer: Any, pl_module: nn.Module,
                           checkpoint: dict[str, Any]) -> None:
        if self.method is not None and "state_dict" in checkpoint:
            to_plain_state(pl_module, checkpoint["state_dict"], method=self.method)

    def state_dict(self) -> dict[str, Any]:
        return self.checkpoint_state()

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Lightning restores callbacks before on_fit_start: restore() waits for the method
        self.restore(state_dict)
