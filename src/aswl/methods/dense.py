"""Dense training: no pruning; the reference every sparse method is compared with."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from aswl.checks import ConfigError
from aswl.methods.base import MethodConfig, SparseMethod, register_method
from aswl.safe_yaml import short_repr
from aswl.sparse.schedules import Never


@dataclass
class DenseConfig(MethodConfig):
    target_sparsity: float = 0.0


@register_method("dense")
class Dense(SparseMethod):
    """No pruning: every mask stays all ones (the baseline of any sparsity table)."""

    config_class = DenseConfig

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """``target_sparsity`` is on every method's config, but dense prunes nothing: any
        value other than 0 is an option it does not use."""
        super().check_options(options)
        if options.get("target_sparsity", 0) != 0:
            raise ConfigError(f"method 'dense' does not use option 'target_sparsity' (given "
                              f"{short_repr(options['target_sparsity'])}): it prunes nothing; "
                              "remove it, or choose a sparse method (see `aswl methods`)")

    def build_schedule(self) -> Never:
        return Never()

    def layer_densities(self) -> dict[str, float]:
        return {name: 1.0 for name in self.layers}
