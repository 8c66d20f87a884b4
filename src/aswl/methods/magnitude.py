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

from aswl.methods.base import MethodConfig, SparseMethod, check, register_method
from aswl.sparse import dense_weight, keep_count, topk_mask

log = logging.getLogger(__name__)

SCOPES = ("layer", "global")


# --------------------------------------------------------------------------- shared helpers
def zero_pruned(method: SparseMethod) -> None:
    """Set the dense weights under every mask's zeros to exactly zero."""
    with torch.no_grad():
        for name, module in method.layers.items():
            dense_weight(module).masked_fill_(~method.masks[name].mask, 0.0)


def active_scores(module: nn.Module, mask: Tensor) -> Tensor:
    """Dense-weight magnitude of the active weights, -1 for pruned ones (so masks only shrink)."""
    magnitude = dense_weight(module).detach().abs().float()
    return torch.where(mask, magnitude, torch.full_like(magnitude, -1.0))


def global_topk_masks(scores: dict[str, Tensor], keep: int) -> dict[str, Tensor]:
    """One threshold across all layers: keep exactly ``keep`` weights with the largest scores.

    Every layer keeps at least its single best weight (so no layer is cut off entirely); this
    never changes the total count as long as ``keep`` >= the number of layers.
    """
    if not scores:
        return {}
    device = next(iter(scores.values())).device
    flats = []
    for score in scores.values():
        flat = score.detach().reshape(-1).float().to(device, copy=True)
        flat[flat.argmax()] = float("inf")
        flats.append(flat)
    joined = topk_mask(torch.cat(flats), max(keep, len(flats)))
    parts = joined.split([flat.numel() for flat in flats])
    out: dict[str, Tensor] = {}
    for (name, score), part in zip(scores.items(), parts, strict=True):
        out[name] = part.view_as(score).to(score.device)
    return out


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

    Subclasses set the sparsity by step (``target_sparsity_now``) and when masks are recomputed
    (``mask_update_due``).
    """

    straight_through = False
    config: ScopedConfig

    def mask_update_due(self) -> bool:
        """After ``step_count`` advanced: recompute masks now? Default: every mask_interval."""
        return self.step_count % self.config.mask_interval == 0

    def update_masks(self) -> None:
        sparsity = self.target_sparsity_now()
        with torch.no_grad():
            scores = {name: active_scores(module, self.masks[name].mask)
                      for name, module in self.layers.items()}
            if self.config.scope == "global":
                masks = global_topk_masks(scores, global_keep(self, sparsity))
            else:
                masks = {name: topk_mask(score, keep_count(self.numels[name], 1.0 - sparsity))
                         for name, score in scores.items()}
            for name, mask in masks.items():
                self.masks[name].mask.copy_(mask)
        zero_pruned(self)

    def step(self) -> None:
        zero_pruned(self)
        self.step_count += 1
        if self.mask_update_due():
            self.update_masks()


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
    ``mask_interval``, ``schedule`` and the ramp fields are not used.
    """

    config_class = MagnitudeConfig
    config: MagnitudeConfig

    @property
    def prune_step(self) -> int:
        return int(round(self.config.prune_at * self.total_steps))

    def target_sparsity_now(self) -> float:
        return self.config.target_sparsity if self.step_count >= self.prune_step else 0.0

    def mask_update_due(self) -> bool:
        return self.step_count == self.prune_step

    def update_masks(self) -> None:
        super().update_masks()
        if self.step_count >= self.prune_step:
            log.debug("magnitude: pruned to %.4f at step %d", self.global_sparsity(),
                      self.step_count)
