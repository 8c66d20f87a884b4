"""RigL: sparse-to-sparse training with magnitude drop and gradient growth (Evci et al. 2020)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from aswl.methods.base import (
    MethodConfig,
    SparseMethod,
    check,
    register_method,
    reset_optimizer_state,
    zero_pruned,
)
from aswl.sparse import dense_weight, keep_count, topk_mask
from aswl.sparse.allocation import erk_densities
from aswl.sparse.schedules import CosineDecay, Periodic, at_step

log = logging.getLogger(__name__)


@dataclass
class RigLConfig(MethodConfig):
    update_interval: int = 100
    """Steps between mask updates (RigL's delta-T)."""
    drop_fraction: float = 0.3
    """Fraction of each layer's active weights dropped (and regrown) at the first update;
    decays with a cosine to 0 at ``end``."""
    end: float | None = None
    """Fraction of training after which the masks stop changing (RigL's T_end); None:
    ``ramp_end`` (0.75 by default, as in the paper), so a grid that sets ramp_end for
    every method moves RigL's end too."""
    ramp_end: float = 0.75
    """RigL's T_end when ``end`` is None (the field every gradual method shares)."""
    distribution: str = "erk"
    """Layer densities: ``erk`` (Erdős–Rényi-Kernel) or ``uniform`` (every layer at target)."""

    def validate(self) -> None:
        super().validate()
        check(self.update_interval >= 1, "update_interval", self.update_interval,
              "an integer >= 1")
        check(0.0 <= self.drop_fraction < 1.0, "drop_fraction", self.drop_fraction,
              "a fraction in [0, 1)")
        check(self.end is None or 0.0 <= self.end <= 1.0, "end", self.end,
              "None (use ramp_end) or a fraction in [0, 1]")
        check(0.0 <= self.ramp_end <= 1.0, "ramp_end", self.ramp_end, "a fraction in [0, 1]")
        check(self.distribution in ("erk", "uniform"), "distribution", self.distribution,
              "'erk' or 'uniform'")


@register_method("rigl")
class RigL(SparseMethod):
    """RigL: Evci, Gale, Menick, Castro & Elsen, "Rigging the Lottery: Making All Tickets
    Winners", ICML 2020.

    Sparse from the start at a fixed per-layer count: ERK densities (``distribution='erk'``)
    scaled to ``target_sparsity``, rounded per layer with ``keep_count``; random initial masks
    drawn from torch's global RNG when the method is built. Every ``update_interval`` steps
    before ``end`` of training (default: ``ramp_end``), each layer drops
    ``floor(f(t) * active)`` of its active weights with the smallest magnitude and grows as
    many inactive ones with the largest magnitude of the dense gradient,
    f(t) = drop_fraction / 2 * (1 + cos(pi t / T_end)); newly grown weights start at zero (a
    weight dropped and regrown in the same update keeps its value, as in the reference code).
    The layer's count never changes.

    Gradients: the mask is straight-through, so :meth:`after_backward` sees the dense gradient;
    it keeps a copy on the steps before an update, then zeroes the gradient of every masked
    weight, so all other optimiser steps use the plain masked gradient. Masked dense weights
    are re-zeroed after every step (no drift from optimiser momentum). The optimiser state
    of a newly grown weight (momentum, Adam moments) is reset to zero when
    :meth:`update_masks` is given the weight optimiser, as ``training_step`` and
    ``aswl.sparsify`` do.
    """

    config_class = RigLConfig
    config: RigLConfig
    straight_through = True
    pin_pruned = True

    def __init__(self, model: nn.Module, config: RigLConfig | None = None,
                 total_steps: int | None = None, **overrides: Any) -> None:
        super().__init__(model, config, total_steps, **overrides)
        self._grads: dict[str, Tensor] = {}
        self.drop = CosineDecay(self.config.drop_fraction, self.schedule.end_step)
        """The drop fraction at each step (cosine decay to 0 at ``end``)."""

    # ------------------------------------------------------------------ allocation
    def layer_densities(self) -> dict[str, float]:
        """Constant per-layer densities: ERK (or uniform) at the target."""
        density = 1.0 - self.config.target_sparsity
        if self.config.distribution == "uniform":
            return {name: density for name in self.layers}
        shapes = {name: tuple(dense_weight(m).shape) for name, m in self.layers.items()}
        return erk_densities(shapes, density)

    def build_schedule(self) -> Periodic:
        """Drop and grow every ``update_interval`` steps before ``end`` (default ramp_end)."""
        end = self.config.ramp_end if self.config.end is None else self.config.end
        return Periodic(self.config.target_sparsity, self.config.update_interval,
                        at_step(end, self.total_steps))

    def init_masks(self) -> None:
        """Random masks at the per-layer counts (torch's global RNG)."""
        densities = self.layer_densities()
        with torch.no_grad():
            for name in self.layers:
                mask = self.masks[name].mask
                numel = self.numels[name]
                keep = keep_count(numel, densities[name])
                chosen = torch.randperm(numel)[:keep]
                flat = torch.zeros(numel, dtype=torch.bool)
                flat[chosen] = True
                mask.copy_(flat.view(mask.shape))
        zero_pruned(self)

    def update_masks(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Drop and grow at the current step's drop fraction."""
        self.rigl_update(self.drop_fraction_at(self.step_count), optimizer)

    # ------------------------------------------------------------------ drop / grow
    @property
    def end_step(self) -> int:
        return self.schedule.end_step

    def drop_fraction_at(self, step: int) -> float:
        """Cosine decay of the drop fraction from ``drop_fraction`` to 0 at ``end``."""
        return self.drop.value(step)

    def after_backward(self) -> None:
        """Keep the dense gradient before an update; mask the gradient of pruned weights."""
        capture = self.schedule.update_due(self.step_count + 1)
        with torch.no_grad():
            for name, module in self.layers.items():
                weight = dense_weight(module)
                if weight.grad is None:
                    continue
                if capture:
                    self._grads[name] = weight.grad.detach().abs().float()
                weight.grad.mul_(self.masks[name].mask)

    def rigl_update(self, fraction: float,
                    optimizer: torch.optim.Optimizer | None = None) -> None:
        """Drop ``floor(fraction * active)`` smallest active weights per layer, grow as many;
        the optimiser state of the grown weights (if ``optimizer`` is given) restarts at 0."""
        with torch.no_grad():
            for name, module in self.layers.items():
                grad = self._grads.get(name)
                if grad is None:
                    log.warning("rigl: no gradient kept for layer %s at step %d; no update "
                                "(is after_backward() called?)", name, self.step_count)
                    continue
                mask = self.masks[name].mask
                weight = dense_weight(module)
                active = int(mask.sum())
                drop = int(fraction * active)
                if drop == 0:
                    continue
                magnitude = weight.detach().abs().float()
                kept = topk_mask(torch.where(mask, magnitude, torch.full_like(magnitude, -1.0)),
                                 active - drop)
                grown = topk_mask(torch.where(kept, torch.full_like(grad, -1.0), grad), drop)
                new_mask = kept | grown
                fresh = grown & ~mask
                weight.masked_fill_(fresh, 0.0)  # new connections start at zero
                if optimizer is not None:
                    reset_optimizer_state(optimizer, weight, fresh)
                mask.copy_(new_mask)
        self._grads = {}
        zero_pruned(self)

    def _finalize(self) -> None:
        """The per-layer counts are constant: nothing to prune, only pin the zeros."""
        self.step_count = max(self.step_count, self.total_steps)
        zero_pruned(self)
