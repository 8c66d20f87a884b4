"""Hugging Face ``transformers.Trainer``: ``Trainer(..., callbacks=[ASWLTrainerCallback(0.9)])``.

Needs ``transformers`` and ``accelerate`` (``pip install aswl[hf]``). When training begins the
callback attaches the method to the Trainer's model and hooks it onto the Trainer's optimiser
with :func:`aswl.sparsify` (the number of steps is the Trainer's ``max_steps``, counted in
optimiser steps, so gradient accumulation is accounted for); when training ends it sets the
final masks. ``callback.method.export()`` is then the plain sparse model.
"""

from __future__ import annotations

from typing import Any

from aswl.integrations._callback import SparsifyCallbackBase
from aswl.methods import ConfigError

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
        if self.method is not None:
            return
        if model is None or optimizer is None:
            raise ConfigError("ASWLTrainerCallback: the Trainer passed no model or optimizer "
                              "to on_train_begin")
        self.start(model, optimizer, int(state.max_steps))

    def on_train_end(self, args: Any, state: Any, control: Any, **kwargs: Any) -> None:
        self.finish()
