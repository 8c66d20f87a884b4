"""Hooks into the trainer: benchmarks and tools extend a run instead of copying the loop.

Subclass :class:`Callback`, override the hooks you need and pass instances to
:func:`aswl.train.train` or :class:`aswl.train.Trainer` (``callbacks=[...]``)::

    class LogLoss(Callback):
        def on_step(self, trainer, step, loss):
            if step % 100 == 0:
                logging.getLogger("my_run").info("step %d loss %.4f", step, float(loss))

Hooks run on every rank, in the order the callbacks were given.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from torch import Tensor

    from aswl.train.loop import Trainer


class Callback:
    """No-op hooks; override the ones you need."""

    def on_start(self, trainer: Trainer) -> None:
        """Once, before the first step of :meth:`~aswl.train.Trainer.fit` (after a resume)."""

    def on_step(self, trainer: Trainer, step: int, loss: Tensor) -> None:
        """After each optimisation step; ``step`` counts the steps done (1 after the first),
        ``loss`` is the step's task loss (a tensor: ``float()`` it only when needed, as that
        waits for the device)."""

    def on_epoch(self, trainer: Trainer, record: dict[str, Any]) -> None:
        """After each epoch's evaluation, with the epoch's metrics (the metrics.jsonl line)."""
