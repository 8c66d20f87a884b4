"""The one budget solver: exact for a linear cost, bisection for any other."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from aswl.sparse.budget import LinearCost, fit_budget


class SquareCost:
    """A cost that is not linear: each unit's cost grows with its fraction squared."""

    def __init__(self, sizes: Tensor) -> None:
        self.sizes = sizes.double()

    @property
    def total(self) -> float:
        return float(self.sizes.sum())

    def kept(self, density: Tensor) -> Tensor:
        return (self.sizes * density.double() ** 2).sum(-1)


def test_the_linear_cost_is_met_exactly_within_the_bounds():
    sizes = torch.tensor([100.0, 2000.0, 50.0, 7.0])
    raw = torch.tensor([0.9, 0.2, 0.5, 0.01])
    lower = torch.tensor([0.05, 0.0, 0.5, 1 / 7])
    cost = LinearCost(sizes)
    kept = 0.3 * cost.total
    density = fit_budget(raw, lower, cost, kept)
    assert float(cost.kept(density)) == pytest.approx(kept, rel=1e-12)
    assert bool((density >= lower.double() - 1e-12).all() and (density <= 1).all())
    free = (density > lower.double()) & (density < 1)
    ratio = density[free] / raw[free].double()
    assert torch.allclose(ratio, ratio[0].expand_as(ratio))  # one shared scale


def test_bisection_agrees_with_the_exact_solver_and_serves_other_costs():
    sizes = torch.tensor([300.0, 40.0, 900.0])
    raw, lower = torch.tensor([0.7, 0.3, 0.5]), torch.full((3,), 0.02)
    linear = LinearCost(sizes)

    class Opaque:  # the same cost, not known to be linear: bisection
        total = linear.total

        def kept(self, density: Tensor) -> Tensor:
            return linear.kept(density)

    exact = fit_budget(raw, lower, linear, 500.0)
    assert torch.allclose(fit_budget(raw, lower, Opaque(), 500.0), exact, atol=1e-9)
    square = SquareCost(sizes)
    density = fit_budget(raw, lower, square, 0.25 * square.total)
    assert float(square.kept(density)) == pytest.approx(0.25 * square.total, rel=1e-9)
    whole = fit_budget(raw, lower, linear, linear.total)
    assert torch.equal(whole, torch.ones(3, dtype=torch.float64))


def test_costs_broadcast_over_leading_dims():
    cost = LinearCost(torch.tensor([1.0, 2.0]))
    assert cost.kept(torch.tensor([[1.0, 1.0], [0.5, 0.0]])).tolist() == [3.0, 0.5]
