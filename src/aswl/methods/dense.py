"""Dense training: no pruning; the reference every sparse method is compared with."""

from __future__ import annotations

from dataclasses import dataclass

from aswl.methods.base import MethodConfig, SparseMethod, register_method
from aswl.sparse.schedules import Never


@dataclass
class DenseConfig(MethodConfig):
    target_sparsity: float = 0.0


@register_method("dense")
class Dense(SparseMethod):
    """No pruning: every mask stays all ones (the baseline of any sparsity table)."""

    config_class = DenseConfig

    def build_schedule(self) -> Never:
        return Never()

    def layer_densities(self) -> dict[str, float]:
        return {name: 1.0 for name in self.layers}
