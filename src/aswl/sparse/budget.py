"""The one budget solver: kept fractions ``clip(c * raw, lower, 1)`` under a kept cost.

A method's allocator gives each unit (a layer in weight mode, a coupled channel group in
channel mode) a raw kept fraction; one shared scale c puts them on the budget, each unit
within [its lower bound, 1]. The cost is an object with

* ``kept(density)``: the kept cost at per-unit kept fractions (a tensor; broadcasts over
  leading dims), nondecreasing in every fraction;
* ``total``: the dense cost.

:class:`LinearCost` (weights: the cost of a layer is its number of weights) is solved exactly
at the breakpoints of the piecewise-linear kept cost (:func:`linear_scale`); any other cost
(channel FLOPs or parameters, :class:`aswl.sparse.channels.CostModel`, which multiplies the
fractions of a layer's two sides) by bisection on c.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
import torch
from torch import Tensor

BISECTION_STEPS = 60
"""Halvings of the scale's bracket for a cost that is not linear (2^-60: float precision)."""


class Cost(Protocol):
    """What :func:`fit_budget` needs of a cost (see the module docstring)."""

    @property
    def total(self) -> float: ...

    def kept(self, density: Tensor) -> Tensor: ...


class LinearCost:
    """Kept cost ``sum(sizes * density)`` (weight mode: ``sizes`` = the layers' numels)."""

    def __init__(self, sizes: Tensor) -> None:
        self.sizes = sizes.detach().double().cpu()

    @property
    def total(self) -> float:
        return float(self.sizes.sum())

    def kept(self, density: Tensor) -> Tensor:
        return (density.double().cpu() * self.sizes).sum(-1)


def clip(density: Tensor, lower: Tensor) -> Tensor:
    """``density`` within [``lower``, 1]."""
    return torch.minimum(torch.maximum(density, lower), torch.ones_like(density))


def linear_scale(raw: np.ndarray, sizes: np.ndarray, lower: np.ndarray,
                 target: float) -> float:
    """The c with sum(sizes * clip(c * raw, lower, 1)) = target, exactly.

    The kept count is piecewise linear and nondecreasing in c, with breakpoints where a unit
    leaves its lower bound (c = lower / raw) or reaches 1 (c = 1 / raw): evaluate it at every
    breakpoint, then solve the linear piece that crosses the target.
    """
    points = np.unique(np.concatenate([lower / raw, 1.0 / raw]))
    kept = (sizes * np.clip(points[:, None] * raw, lower, 1.0)).sum(axis=1)
    above = int(np.searchsorted(kept, target))  # first breakpoint keeping >= target
    if above == 0:
        return float(points[0])  # every unit at its lower bound already keeps enough
    if above >= len(points):
        return float(points[-1])
    lo, hi = points[above - 1], points[above]
    middle = (lo + hi) / 2 * raw
    free = (middle > lower) & (middle < 1.0)
    slope = float((sizes * raw * free).sum())
    if slope <= 0:
        return float(hi)
    fixed = float((sizes * np.clip(lo * raw, lower, 1.0) * ~free).sum())
    return float((target - fixed) / slope)


def budget_scale(raw: Tensor, lower: Tensor, cost: Cost, kept: float,
                 at_most: bool = False) -> float:
    """The shared scale c of :func:`fit_budget` (inf: the budget keeps every unit whole)."""
    raw = raw.detach().double().cpu().clamp_min(1e-12)
    lower = lower.detach().double().cpu()
    if float(cost.kept(torch.ones_like(raw))) <= kept:
        return float("inf")
    if isinstance(cost, LinearCost):
        return linear_scale(raw.numpy(), cost.sizes.numpy(), lower.numpy(), kept)
    lo, hi = 0.0, float((1.0 / raw).max())
    for _ in range(BISECTION_STEPS):
        mid = (lo + hi) / 2
        if float(cost.kept(clip(mid * raw, lower))) < kept:
            lo = mid
        else:
            hi = mid
    return lo if at_most else hi


def fit_budget(raw: Tensor, lower: Tensor, cost: Cost, kept: float,
               at_most: bool = False) -> Tensor:
    """Per-unit kept fractions ``clip(c * raw, lower, 1)`` (float64) whose kept cost
    ``cost.kept`` is ``kept`` (exact for a :class:`LinearCost`; every unit whole when the
    budget allows it). ``raw``: the allocator's raw kept fractions (> 0); ``lower``: each
    unit's lowest kept fraction. ``at_most``: for a cost that moves in steps (whole units),
    the last step at or under ``kept`` instead of the first at or over it."""
    scale = budget_scale(raw, lower, cost, kept, at_most)
    raw = raw.detach().double().cpu().clamp_min(1e-12)
    if scale == float("inf"):
        return torch.ones_like(raw)
    return clip(scale * raw, lower.detach().double().cpu())
