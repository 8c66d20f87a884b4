"""What the framework callbacks (Lightning, Hugging Face) share: their settings, and starting
and finishing the method once per run."""

from __future__ import annotations

from typing import Any

from torch import nn

from aswl.integrations import sparsify
from aswl.methods import SparseMethod


class SparsifyCallbackBase:
    """Settings of a framework callback; :meth:`start` calls :func:`aswl.sparsify` once."""

    def __init__(self, target_sparsity: float | None = None, method: str = "aswl",
                 total_steps: int | None = None, finalize: bool = True,
                 **options: Any) -> None:
        super().__init__()
        self.target_sparsity = target_sparsity
        self.method_name = method
        self.total_steps = total_steps
        self.finalize = finalize
        self.options = options
        self.method: SparseMethod | None = None

    def start(self, model: nn.Module, optimizer: Any, default_steps: int) -> None:
        """Attach the method, unless a previous fit already did (it then continues)."""
        if self.method is None:
            self.method = sparsify(model, optimizer, total_steps=self.total_steps or default_steps,
                                   target_sparsity=self.target_sparsity,
                                   method=self.method_name, **self.options)

    def finish(self) -> None:
        if self.finalize and self.method is not None:
            self.method.finalize()
