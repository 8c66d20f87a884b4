"""What channel mode's budget counts: the kept cost of the Conv/Linear layers as a function
of each channel group's kept fraction, and the two ways to meet a budget with it.

A layer's cost (its parameters or FLOPs) scales with the kept fraction of its output group
times the kept fraction of its input channels. The input side is a mix: a layer that reads a
concatenation reads several groups (and maybe channels no group owns, which are never
pruned), so its kept input fraction is ``sum_g share_g * density_g + share_fixed``. A
depthwise conv reads and writes the same channels: its cost scales once with them.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from aswl.sparse.budget import fit_budget
from aswl.sparse.channel_graph import ChannelGroup


@dataclass
class CostModel:
    """Kept cost of the Conv/Linear layers at per-group kept fractions (module docstring)."""

    costs: Tensor
    """Dense cost of each layer."""
    out_group: Tensor
    """Index of each layer's output group; -1: its outputs are never pruned."""
    in_share: Tensor
    """[layers, groups + 1]: the fraction of each layer's input channels that each group
    carries; the last column is the never-pruned rest (all of it for a depthwise conv)."""
    multiple: int = 1
    """Kept channel counts are multiples of this (:func:`round_count`)."""

    @property
    def total(self) -> float:
        return float(self.costs.sum())

    def _sides(self, density: Tensor) -> tuple[Tensor, Tensor]:
        padded = torch.cat([density, density.new_ones(*density.shape[:-1], 1)], -1)
        return padded[..., self.out_group], padded @ self.in_share.T.to(padded.dtype)

    def fractions(self, density: Tensor) -> Tensor:
        """Each layer's kept fraction of its cost."""
        out, inp = self._sides(density)
        return out * inp

    def kept(self, density: Tensor) -> Tensor:
        """Kept cost at these per-group kept fractions; broadcasts over leading dims."""
        return (self.costs * self.fractions(density)).sum(-1)

    def per_channel(self, density: Tensor, sizes: Tensor) -> Tensor:
        """Cost of one more channel in each group at these kept fractions."""
        out, inp = self._sides(density)
        slots = len(sizes) + 1  # the last slot collects the never-pruned sides
        grads = torch.zeros(slots, dtype=self.costs.dtype)
        grads.index_add_(0, self.out_group % slots, self.costs * inp)
        grads += (self.costs * out) @ self.in_share.to(grads.dtype)
        return grads[:-1] / sizes.to(grads.dtype)


class UnitCost:
    """A cost whose groups keep whole units (a grouped conv's blocks): the kept fractions
    are rounded to multiples of each group's unit before ``cost`` counts them, so the one
    budget solver (bisection) meets the budget with the counts that will be used, not with
    fractions that rounding then moves."""

    def __init__(self, cost: CostModel, sizes: Tensor, units: Tensor) -> None:
        self.cost, self.sizes, self.units = cost, sizes.double(), units.double()

    @property
    def total(self) -> float:
        return self.cost.total

    def rounded(self, density: Tensor) -> Tensor:
        units = (density * self.sizes / self.units).round().clamp_min(1.0)
        return torch.minimum(units * self.units, self.sizes) / self.sizes

    def kept(self, density: Tensor) -> Tensor:
        return self.cost.kept(self.rounded(density))


def in_channels(module: nn.Module) -> int:
    """How many input channels (or features) a Conv/Linear layer reads."""
    return module.in_features if isinstance(module, nn.Linear) else module.in_channels


def cost_model(groups: list[ChannelGroup], costs: dict[str, float],
               model: nn.Module | None = None) -> CostModel:
    """``costs``: each Conv/Linear layer's dense cost by name (``model``: where to read the
    layers' input widths; without it, a layer's input is taken as wholly its group's)."""
    names = list(costs)
    row = {n: i for i, n in enumerate(names)}
    out_group = torch.full((len(names),), -1, dtype=torch.long)
    share = torch.zeros(len(names), len(groups) + 1, dtype=torch.float64)
    for g, group in enumerate(groups):
        for name in group.producers:
            if name in row:
                out_group[row[name]] = g
        for name, count in group.inputs.items():
            if name in row:
                width = in_channels(model.get_submodule(name)) if model is not None else count
                share[row[name], g] += count / max(width, 1)
    share[:, -1] = (1.0 - share[:, :-1].sum(1)).clamp_min(0.0)
    return CostModel(torch.tensor([float(costs[n]) for n in names], dtype=torch.float64),
                     out_group, share)


def layer_costs(model: nn.Module, names: list[str], example_inputs: Tensor,
                budget: str) -> dict[str, float]:
    """Each layer's dense parameter count or FLOPs per sample (2 per multiply-accumulate)."""
    if budget == "params":
        return {n: float(model.get_submodule(n).weight.numel()) for n in names}
    from aswl.sparse.flops import layer_flops

    flops = layer_flops(model, names, tuple(example_inputs.shape[1:]))
    return {n: float(flops.get(n, 0)) for n in names}


def round_count(count: int, width: int, multiple: int) -> int:
    """``count`` rounded to the nearest multiple of ``multiple`` (at least one multiple, at
    most ``width``); the full width stays; a group narrower than two multiples is not
    rounded. Kernels are much faster at some widths (on a CPU, oneDNN at multiples of 8:
    a 3x3 conv with 8 channels ran 4x faster than with 9 here), so the latency budget keeps
    counts where its table was measured."""
    if multiple <= 1 or width < 2 * multiple or count >= width:
        return min(count, width)
    return min(width, max(multiple, round(count / multiple) * multiple))


def next_count(count: int, width: int, unit: int, multiple: int) -> int:
    """The next kept count a group can take: one more block of ``unit`` channels, the next
    multiple of ``multiple`` (:func:`round_count`; the full width after the last), or one
    more channel."""
    if unit > 1:
        return min(width, count + unit)
    if multiple > 1 and width >= 2 * multiple:
        return min(width, (count // multiple + 1) * multiple)
    return min(width, count + 1)


def fill_slack(cost: Any, counts: list[int], sizes: Tensor, units: list[int], multiple: int,
               kept: float, order: Callable[[list[int]], list[int]]) -> list[int]:
    """Spend the slack a budget solved in steps leaves under ``kept`` (coarse counts stop
    at the last step under it): one step (:func:`next_count`) at a time, to the first group
    in ``order(counts)`` whose step keeps the cost at or under ``kept``, until no step fits.
    A step past a small layer's 8 channels can be a large share of a budget, so without
    this a 2x latency budget landed at 2.3x."""
    sizes = sizes.double()
    counts = list(counts)
    while True:
        for index in order(counts):
            more = list(counts)
            more[index] = next_count(counts[index], int(sizes[index]), units[index], multiple)
            if more[index] > counts[index] and float(
                    cost.kept(torch.tensor(more, dtype=torch.float64) / sizes)) <= kept:
                counts = more
                break
        else:
            return counts


def best_next(scores: list[Tensor]) -> Callable[[list[int]], list[int]]:
    """:func:`fill_slack`'s order for one threshold: the group whose next channel scores
    highest first."""
    ranked = [s.detach().double().cpu().reshape(-1).sort(descending=True).values
              for s in scores]

    def order(counts: list[int]) -> list[int]:
        best = [float(r[c]) if c < len(r) else -math.inf for r, c in zip(ranked, counts)]
        return sorted(range(len(counts)), key=lambda i: -best[i])
    return order


def furthest_below(raw: Tensor, sizes: Tensor) -> Callable[[list[int]], list[int]]:
    """:func:`fill_slack`'s order for one scale: the group furthest below its raw kept
    fraction first."""
    def order(counts: list[int]) -> list[int]:
        share = torch.tensor(counts, dtype=torch.float64) / sizes.double() / raw.double()
        return share.argsort().tolist()
    return order


def threshold_budget(scores: list[Tensor], lower: list[int], model: Any,
                     kept: float) -> list[int]:
    """Channels each group keeps under ONE score threshold across groups, the threshold
    chosen (bisection over the sorted scores) so the kept cost is at most ``kept``; every
    group keeps at least ``lower`` of its channels."""
    sizes = torch.tensor([s.numel() for s in scores], dtype=torch.float64)
    every = torch.cat([s.detach().double().cpu().reshape(-1) for s in scores]).sort().values
    ranked = [s.detach().double().cpu().reshape(-1).sort(descending=True).values for s in scores]

    def counts(threshold: float) -> list[int]:
        return [max(low, int((r >= threshold).sum())) for r, low in zip(ranked, lower)]

    lo, hi = 0, len(every) - 1  # a threshold at every[i] keeps the scores >= every[i]
    while lo < hi:
        mid = (lo + hi) // 2
        density = torch.tensor(counts(float(every[mid])), dtype=torch.float64) / sizes
        if float(model.kept(density)) > kept:
            lo = mid + 1
        else:
            hi = mid
    return counts(float(every[lo]))


__all__ = ["CostModel", "UnitCost", "best_next", "cost_model", "fill_slack", "fit_budget",
           "furthest_below", "in_channels", "layer_costs", "next_count", "round_count",
           "threshold_budget"]
