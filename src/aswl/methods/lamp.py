"""LAMP: layer-adaptive magnitude pruning (Lee, Park, Mo, Ahn & Shin, "Layer-adaptive sparsity
for the magnitude-based pruning", ICLR 2021), pruned gradually.

A method of the shared contract that overrides two hooks: ``scores`` (the LAMP score) and
``global_scope`` (one threshold across layers). Everything else is the magnitude family's:
the cubic ramp of ``gmp_global``, masks that only shrink, pruned weights held at zero.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from aswl.methods.base import GradualConfig, register_method
from aswl.methods.magnitude import MagnitudeFamily
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


def lamp_densities(samples: list[Tensor], sizes: list[int], kept: float) -> Tensor:
    """Each layer's kept fraction under one global LAMP threshold that keeps ``kept`` weights.

    ``samples[l]`` is the whole weight of layer l or a random sample of it (m of its n
    weights): a sampled weight stands for n / m weights, and its LAMP score within the sample,
    times m / n, estimates its score within the layer (the sum over same-or-larger weights
    grows with n / m). Every layer keeps at least one weight.
    """
    total = float(sum(sizes))
    if kept >= total - 0.5:
        return torch.ones(len(sizes), dtype=torch.float64)
    scores, stands_for, owner = [], [], []
    for index, (sample, size) in enumerate(zip(samples, sizes)):
        count = sample.numel()
        scores.append(lamp_scores(sample).reshape(-1).double().cpu() * (count / size))
        stands_for.append(torch.full((count,), size / count, dtype=torch.float64))
        owner.append(torch.full((count,), index, dtype=torch.long))
    order = torch.cat(scores).argsort(descending=True)
    weight = torch.cat(stands_for)[order]
    # the largest scores whose weights add up to at most ``kept`` (to within rounding)
    cut = int(torch.searchsorted(weight.cumsum(0), torch.tensor(kept + 1e-9, dtype=torch.float64),
                                 right=True))
    keep = torch.zeros(len(sizes), dtype=torch.float64)
    keep.index_add_(0, torch.cat(owner)[order[:cut]], weight[:cut])
    size = torch.tensor(sizes, dtype=torch.float64)
    return torch.maximum(keep, torch.ones_like(keep)).div(size).clamp_max(1.0)


@register_method("lamp")
class LAMP(MagnitudeFamily):
    """Gradual LAMP pruning: the cubic schedule of ``gmp_global``, one global threshold on LAMP
    scores (pruned weights stay pruned: they score -1). It has no ``scope`` option."""

    config_class = GradualConfig
    config: GradualConfig
    magnitude_scores = False

    def global_scope(self) -> bool:
        return True

    def scores(self, name: str, module: nn.Module) -> Tensor:
        mask = self.masks[name].mask
        return torch.where(mask, lamp_scores(dense_weight(module)), -1.0)
