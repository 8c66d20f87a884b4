"""Closed-form per-layer density rules (no training): the priors and baselines that learned
splits are compared with."""

from __future__ import annotations

import math
from collections.abc import Sequence


def erk_densities(shapes: dict[str, Sequence[int]], density: float) -> dict[str, float]:
    """Erdős–Rényi-Kernel layer densities with the global kept fraction ``density``.

    Layer l keeps ``eps * sum(shape_l) / prod(shape_l)`` of its weights (for a Linear layer
    ``(n_in + n_out) / (n_in n_out)``: Erdős–Rényi), ``eps`` chosen so the total kept equals
    ``density`` times all weights. Layers whose density would exceed 1 are made dense and the
    budget is re-distributed over the others (RigL's ``get_sparsities_erdos_renyi``).
    """
    numels = {name: math.prod(shape) for name, shape in shapes.items()}
    raw = {name: sum(shape) / numels[name] for name, shape in shapes.items()}
    budget_total = density * sum(numels.values())
    dense: set[str] = set()
    eps = 0.0
    while True:
        free = [name for name in shapes if name not in dense]
        budget = budget_total - sum(numels[name] for name in dense)
        mass = sum(raw[name] * numels[name] for name in free)
        if not free or mass <= 0:
            break
        eps = budget / mass
        over = [name for name in free if eps * raw[name] > 1.0]
        if not over:
            break
        dense.update(over)  # making a layer dense only raises eps: marking all at once is exact
    return {name: 1.0 if name in dense else min(1.0, max(0.0, eps * raw[name]))
            for name in shapes}
