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
from aswl.sparse import MaskedWeight, dense_weight, global_topk_masks, keep_count, topk_mask
from aswl.sparse.schedules import OneShot, at_step

__all__ = ["active_scores", "global_keep", "global_topk_masks", "zero_pruned"]

log = logging.getLogger(__name__)

SCOPES = ("layer", "global")


# --------------------------------------------------------------------------- shared helpers
def active_scores(module: nn.Module, mask: Tensor) -> Tensor:
    """Dense-weight magnitude of the active weights, -1 for pruned ones (so masks only shrink)."""
    return _pruned_low(dense_weight(module).detach().abs().float(), mask)


def _pruned_low(magnitude: Tensor, mask: Tensor) -> Tensor:
    return torch.where(mask, magnitude, torch.full_like(magnitude, -1.0))


def shrink_mask(weight: Tensor, masked: MaskedWeight, keep: int) -> Tensor | None:
    """``topk_mask(active_scores(...), keep)``, the same mask, found without a k-th value
    over the whole layer; None when it is the current mask.

    With ``a`` weights active and ``keep <= a``, the pruned scores (-1) are the lowest, so the
    threshold is the (a - keep + 1)-th smallest active magnitude: a ``topk`` of a few entries
    (pruned ones at inf or nan, which topk ranks last). ``keep == a`` keeps the mask as it is.
    Ties at the threshold (another count than ``keep``), a growing mask or a large step take
    the full path, so the result never differs from it.
    """
    active, numel = masked.count(), masked.mask.numel()
    drop = active - keep
    if drop == 0:
        return None
    magnitude = weight.detach().abs().float()
    if 0 < drop < max(64, numel // 1024) and keep >= 1:
        ranked = magnitude.div(masked.factor(magnitude)).reshape(-1)  # pruned: inf or nan
        threshold = torch.topk(ranked, drop + 1, largest=False, sorted=False).values.max()
        mask = masked.mask & (magnitude >= threshold)
        if int(mask.count_nonzero()) == keep:
            return mask
    return topk_mask(_pruned_low(magnitude, masked.mask), keep)


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
    magnitude_scores = True  # a subclass whose scores are not |w| sets it False
    config: ScopedConfig

    def global_scope(self) -> bool:
        return self.config.scope == "global"

    def scores(self, name: str, module: nn.Module) -> Tensor:
        return active_scores(module, self.masks[name].mask)

    def update_masks(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """The base's top-k of :meth:`scores`; per layer with magnitude scores, each layer's
        mask is found by :func:`shrink_mask` (the same masks, at a fraction of the cost)."""
        if self.global_scope():
            keep = max(global_keep(self, self.sparsity_now()), len(self.layers))
            counts = {name: self.masks[name].count() for name in self.layers}
            if sum(counts.values()) == keep:  # every active weight is kept: the same masks
                self.kept.update(counts)
                zero_pruned(self)
                return
        if self.global_scope() or not self.magnitude_scores:
            super().update_masks(optimizer)
            return
        with torch.no_grad():
            counts = self.layer_counts()
            for name, module in self.layers.items():
                keep = counts[name]
                mask = shrink_mask(dense_weight(module), self.masks[name], keep)
                if mask is not None:
                    self.masks[name].assign(mask, keep)
                self.kept[name] = keep
        zero_pruned(self)


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

    def build_schedule(self) -> OneShot:
        return OneShot(self.config.target_sparsity, at_step(self.config.prune_at,
                                                             self.total_steps))

    @property
    def prune_step(self) -> int:
        return self.schedule.step
