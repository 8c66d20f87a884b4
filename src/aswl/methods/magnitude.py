"""One-shot magnitude pruning (Han et al. 2015), and the machinery shared by the magnitude
family (``magnitude``, ``imp``, ``gmp``) and the other plain-gradient baselines (``snip``,
``rigl``).

The family prunes with a plain masked gradient (``straight_through=False``): once a weight is
pruned its dense value is set to zero and kept there (re-zeroed after every optimiser step, so
momentum or Adam state left from before the pruning cannot move it), and masks only ever
shrink: a mask update ranks the still-active weights only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from aswl.methods.base import MethodConfig, SparseMethod, check, register_method, zero_pruned
from aswl.sparse import dense_weight, global_topk_masks, keep_count
from aswl.sparse.schedules import Schedule, at_step, one_shot

__all__ = ["active_scores", "global_keep", "global_topk_masks", "zero_pruned"]

log = logging.getLogger(__name__)

SCOPES = ("layer", "global")


# --------------------------------------------------------------------------- shared helpers
def active_scores(module: nn.Module, mask: Tensor) -> Tensor:
    """Dense-weight magnitude of the active weights, -1 for pruned ones (so masks only shrink)."""
    magnitude = dense_weight(module).detach().abs().float()
    return torch.where(mask, magnitude, torch.full_like(magnitude, -1.0))


def global_keep(method: SparseMethod, sparsity: float) -> int:
    """Exact total number of weights kept at a global ``sparsity``."""
    return keep_count(method.total_numel, 1.0 - sparsity)


# --------------------------------------------------------------------------- family base
@dataclass
class ScopedConfig(MethodConfig):
    scope: str = "layer"
    """``layer``: every layer at the same sparsity (its own magnitude threshold);
    ``global``: one magnitude threshold across all layers."""

    def validate(self) -> None:
        super().validate()
        check(self.scope in SCOPES, "scope", self.scope, "'layer' or 'global'")


class MagnitudeFamily(SparseMethod):
    """Magnitude masks that only shrink; pruned weights are zero and frozen (plain gradient).

    Subclasses pick the schedule (``build_schedule``: when, and at which sparsity); ``scope``
    picks per-layer or one global threshold.
    """

    straight_through = False
    pin_pruned = True
    config: ScopedConfig

    def global_scope(self) -> bool:
        return self.config.scope == "global"

    def scores(self, name: str, module: nn.Module) -> Tensor:
        return active_scores(module, self.masks[name].mask)


# --------------------------------------------------------------------------- one-shot
@dataclass
class MagnitudeConfig(ScopedConfig):
    prune_at: float = 0.5
    """Fraction of training after which the dense model is pruned once to the target."""

    def validate(self) -> None:
        super().validate()
        check(0.0 <= self.prune_at <= 1.0, "prune_at", self.prune_at, "a fraction in [0, 1]")


@register_method("magnitude")
class Magnitude(MagnitudeFamily):
    """One-shot magnitude pruning then fine-tuning: Han, Pool, Tran & Dally, "Learning both
    Weights and Connections for Efficient Neural Networks", NeurIPS 2015.

    Dense training until ``prune_at`` of the steps, one pruning to ``target_sparsity`` by
    weight magnitude (per layer by default, as Han et al.; ``scope='global'`` for one threshold
    across layers), then fine-tuning with the masks frozen and pruned weights at zero.
    """

    config_class = MagnitudeConfig
    config: MagnitudeConfig

    def build_schedule(self) -> Schedule:
        return one_shot(self.config.target_sparsity, at_step(self.config.prune_at,
                                                             self.total_steps))

    @property
    def prune_step(self) -> int:
        return self.schedule.at[0]
