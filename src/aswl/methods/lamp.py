"""LAMP: layer-adaptive magnitude pruning (Lee, Park, Mo, Ahn & Shin, "Layer-adaptive sparsity
for the magnitude-based pruning", ICLR 2021), pruned gradually.

A method of the shared contract that overrides two hooks: ``scores`` (the LAMP score) and
``global_scope`` (one threshold across layers). Everything else is the magnitude family's:
the cubic ramp of ``gmp_global``, masks that only shrink, pruned weights held at zero.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from aswl.methods.base import register_method
from aswl.methods.magnitude import MagnitudeFamily, ScopedConfig
from aswl.sparse import dense_weight


def lamp_scores(weight: Tensor) -> Tensor:
    """score(u) = w_u^2 / sum_{v >= u} w_v^2, weights sorted ascending by w^2 (the sum runs
    over the weight itself and every larger one of its layer); the largest weight scores 1."""
    squared = weight.detach().float().reshape(-1) ** 2
    ordered, order = torch.sort(squared)
    tail = ordered.flip(0).cumsum(0).flip(0)  # sum of the same-or-larger weights
    scores = torch.empty_like(squared)
    scores[order] = ordered / tail.clamp_min(torch.finfo(tail.dtype).tiny)
    return scores.view_as(weight)


@register_method("lamp")
class LAMP(MagnitudeFamily):
    """Gradual LAMP pruning: the cubic schedule of ``gmp_global``, one global threshold on LAMP
    scores (pruned weights stay pruned: they score -1). ``scope`` is not used."""

    config_class = ScopedConfig

    def global_scope(self) -> bool:
        return True

    def scores(self, name: str, module: nn.Module) -> Tensor:
        mask = self.masks[name].mask
        return torch.where(mask, lamp_scores(dense_weight(module)), -1.0)
