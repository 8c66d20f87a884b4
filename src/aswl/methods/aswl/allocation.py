"""ASWL's allocation, stateless: attentions -> raw densities -> densities on the budget.

* Equation 2: a layer's pruning ratio is ``p = min((1 - a)^alpha, cap)`` (:func:`pruning_ratios`);
  its raw density is ``1 - p``, times its LAMP density at the current budget with the LAMP
  prior (:func:`raw_densities`).
* The target variant projects the raw densities onto the budget by one shared scale c, each
  layer within [its floor, 1] (:func:`project_to_budget`), so the model has exactly the target.
* A layer held at its floor keeps the attention at which the floor begins
  (:func:`floor_attentions`), so it can grow again as soon as the split asks for it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from aswl.sparse.budget import LinearCost, budget_scale


def pruning_ratios(attention: Tensor, alpha: float, cap: float) -> Tensor:
    """Equation 2: p = min((1 - a)^alpha, cap), differentiable in a."""
    base = 1.0 - attention
    ratio = torch.where(base > 0, base.clamp_min(1e-12) ** alpha,
                        torch.zeros_like(base))  # a = 1 prunes nothing, for every alpha
    return ratio.clamp_max(cap)


def raw_densities(attention: Tensor, alpha: float, cap: float,
                  prior: Tensor | None = None) -> Tensor:
    """1 - p(a), times the prior's per-layer density when there is one."""
    raw = 1.0 - pruning_ratios(attention, alpha, cap)
    return raw if prior is None else raw * prior.to(raw.device, raw.dtype)


def floor_attentions(raw: Tensor, numel: Tensor, budget: float, floor: list[float],
                     prior: Tensor, alpha: float) -> list[float | None]:
    """Per layer, the attention at which the layer reaches its floor at ``budget`` when its
    raw density (``raw``) is below that point, else None (the soft floor's lift).

    ``prior``: the per-layer factor on the raw densities (ones without a prior)."""
    found = _budget_scale(raw, numel, budget, floor)
    if found is None:
        return [None] * len(floor)
    scale, values, _, lower, _ = found
    boundary = np.minimum(1.0, lower / max(scale, 1e-12))
    lifted: list[float | None] = []
    for value, edge, factor in zip(values, boundary, prior.tolist()):
        if value < edge:  # the attention whose own density times the prior's is edge
            own = min(1.0, edge / max(factor, 1e-12))
            lifted.append(float(1.0 - (1.0 - own) ** (1.0 / alpha)))
        else:
            lifted.append(None)
    return lifted


def project_to_budget(density: Tensor, numel: Tensor, budget: float,
                      floor: float | list[float], soft_floor: bool = False) -> Tensor:
    """Scale raw densities by one shared factor c so sum(n_l * clamp(c d_l)) = budget * N.

    Each layer stays in [max(floor_l, 1/n_l), 1] (``floor``: one number, or one per layer).
    The factor of the free (unclamped) layers is written differentiably, c = (budget N - kept
    by clamped layers) / sum_free n_l d_l, so the gradient through it only moves the split,
    never the total. c itself comes from the one budget solver
    (:func:`aswl.sparse.budget.fit_budget`'s scale, exact for the linear cost of weights).
    """
    found = _budget_scale(density, numel, budget, floor)
    if found is None:
        return torch.ones_like(density)
    scale, raw, sizes, lower, target = found
    scaled = scale * raw
    free_np = (scaled > lower) & (scaled < 1.0)
    clamped = torch.as_tensor(np.clip(scaled, lower, 1.0), dtype=density.dtype,
                              device=density.device)
    if not free_np.any():
        return clamped
    free = torch.as_tensor(free_np, device=density.device)
    clamped_kept = float((sizes * np.clip(scaled, lower, 1.0) * ~free_np).sum())
    shared = (target - clamped_kept) / (numel * density * free).sum()
    projected = torch.where(free, shared * density, clamped)
    if not soft_floor or not density.requires_grad:
        return projected
    soft_np = free_np | (scaled <= lower)
    soft = torch.as_tensor(soft_np, device=density.device)
    held_kept = float((sizes * np.clip(scaled, lower, 1.0) * ~soft_np).sum())
    soft_shared = (target - held_kept) / (numel * density * soft).sum()
    carrier = torch.where(soft, soft_shared * density, torch.zeros_like(density))
    return projected.detach() + (carrier - carrier.detach())


def _budget_scale(density: Tensor, numel: Tensor, budget: float, floor: float | list[float]
                  ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, float] | None:
    """The shared scale c of :func:`project_to_budget` with the numpy arrays it came from:
    (c, raw densities, layer sizes, lower bounds, kept-weight target); None when the budget
    keeps every weight."""
    sizes = numel.detach().cpu().double().numpy()
    total = float(sizes.sum())
    target = budget * total
    if target >= total - 0.5:
        return None
    raw = np.maximum(density.detach().cpu().double().numpy(), 1e-12)
    lower = np.maximum(np.asarray(floor, dtype=np.float64), 1.0 / sizes)
    scale = budget_scale(torch.from_numpy(raw), torch.from_numpy(lower), LinearCost(numel), target)
    return scale, raw, sizes, lower, target

