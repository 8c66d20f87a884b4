"""ASWL's allocators: how a variant turns the attentions' raw densities into each layer's
kept fraction. The variants differ in the allocator only (the attention learner, the masks,
the estimator and the timing are :class:`~aswl.methods.aswl.common.ASWLBase`'s):

* :class:`PaperAllocator` (the paper variant): the raw densities themselves, pulled towards
  ``density_target`` by the regulariser gamma * (S(A) - r)^2 (equation 3);
* :class:`BudgetAllocator` (the target variant): the raw densities, times LAMP's per-layer
  densities (the prior), projected onto the scheduled budget by the one budget solver, each
  layer within [its floor, 1], with the soft floor's lift after each attention step; the
  masks freeze when the ramp ends (``freeze_after_ramp``).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

import torch
from torch import Tensor

from aswl.methods.aswl.allocation import floor_attentions, project_to_budget
from aswl.methods.base import ConfigError
from aswl.methods.lamp import lamp_densities
from aswl.sparse import dense_weight
from aswl.sparse.schedules import Every

if TYPE_CHECKING:
    from aswl.methods.aswl.common import ASWLBase

log = logging.getLogger(__name__)

PRIOR_INTERVAL_MAX = 32
"""``prior='lamp'`` is refreshed with the estimator's bands, and at least this often."""


class Allocator:
    """The allocator's hooks, each a no-op here: raw densities as they are, no regulariser,
    no prior, no freeze."""

    freezes = False
    """The masks and attentions freeze when the schedule is done."""

    def __init__(self, method: ASWLBase) -> None:
        self.method = method
        self.prior = torch.ones(len(method.layers), dtype=torch.float64)
        """Per-layer factor on the raw densities (ones: none)."""

    def uses_prior(self) -> bool:
        return False

    def densities(self, raw: Tensor) -> Tensor:
        """Each layer's kept fraction from its raw density (differentiable)."""
        return raw

    def regularizer(self) -> Tensor | float:
        """A term on the attentions added to the task loss."""
        return 0.0

    def prior_due(self, exact: bool) -> bool:
        """Refresh the prior before this mask update?"""
        return False

    def refresh_prior(self) -> None:
        """Recompute the prior's factor."""

    def after_attention_step(self) -> None:
        """Adjust the attentions after their optimiser step (none here)."""

    def load_prior(self, prior: list[float] | None) -> None:
        """The saved prior (kept only by an allocator that uses one)."""


class PaperAllocator(Allocator):
    """Raw densities as they are; the regulariser of equation 3."""

    def regularizer(self) -> Tensor | float:
        """gamma * (S(A) - r)^2 on the global kept fraction S (0 without ``gamma``)."""
        cfg = self.method.config
        if cfg.gamma == 0:  # type: ignore[attr-defined]
            return 0.0
        density = self.method.density_vector()
        numel = self.method._numel(density)
        kept_fraction = (density * numel).sum() / numel.sum()
        return cfg.gamma * (kept_fraction - cfg.density_target) ** 2  # type: ignore[attr-defined]


class BudgetAllocator(Allocator):
    """The target variant's allocator (see the module docstring)."""

    def __init__(self, method: ASWLBase) -> None:
        super().__init__(method)
        cfg = method.config
        self.freezes = bool(cfg.freeze_after_ramp)  # type: ignore[attr-defined]
        self.check_budget()
        self.prior_ready = False
        self.prior_timing = Every(min(method.learner.timing.interval, PRIOR_INTERVAL_MAX))
        """When the prior is refreshed (and at every exact mask update)."""

    def check_budget(self) -> None:
        method, cfg = self.method, self.method.config
        budget = (1.0 - cfg.target_sparsity) * method.total_numel
        needed = sum(method.min_counts.values())
        if needed > budget + 0.5:
            raise ConfigError(
                f"method.target_sparsity = {cfg.target_sparsity} leaves {budget:.0f} weights, "
                f"but the layers' minimum counts (method.min_kept) add up to {needed}: lower "
                f"target_sparsity to at most {1.0 - needed / method.total_numel:.5f} or set "
                f"method.min_kept to a smaller number")

    def uses_prior(self) -> bool:
        return self.method.config.prior == "lamp"  # type: ignore[attr-defined]

    def densities(self, raw: Tensor) -> Tensor:
        """The raw densities projected onto the scheduled budget (each layer within [its
        floor, 1]); a layer at its floor keeps the gradient it would have if it were free."""
        method = self.method
        return project_to_budget(raw, method._numel(raw), 1.0 - method.sparsity_now(),
                                 method.floor, soft_floor=True)

    def prior_due(self, exact: bool) -> bool:
        return self.uses_prior() and (
            exact or not self.prior_ready or self.prior_timing.due(self.method.step_count))

    def refresh_prior(self) -> None:
        """LAMP's per-layer densities at the current budget, from the estimator's fixed
        sample of each layer's dense weights. Refreshed when the estimator's bands are (every
        ``attention_interval`` steps: the attentions change no more often), at least every
        PRIOR_INTERVAL_MAX steps and at every exact mask update."""
        method = self.method
        assert method.estimator is not None  # the target variant is loss-aware
        samples = [method.estimator.sample(name, dense_weight(module).detach())
                   for name, module in method.layers.items()]
        kept = (1.0 - method.sparsity_now()) * method.total_numel
        self.prior = lamp_densities(samples, [method.numels[n] for n in method.layers], kept)
        self.prior_ready = True

    def after_attention_step(self) -> None:
        """The soft floor: raise every attention below the one at which its layer reaches
        its lowest kept fraction at the current budget to exactly that one (not with
        ``scale_output``, where that would rescale the layer's output)."""
        method = self.method
        if method.scales_output:
            return
        raw = method.raw_density(method.attention_vector().detach())
        lifted = floor_attentions(raw, method.numel_vector, 1.0 - method.sparsity_now(),
                                  method.floor, self.prior, method.config.alpha)
        for name, value in zip(method.layers, lifted):
            if value is not None:
                method.masks[name].attention.fill_(min(1.0, max(method.learner.floor, value)))

    def load_prior(self, prior: list[float] | None) -> None:
        if prior is not None:
            if self.uses_prior():  # otherwise the factor stays at one
                self.prior = torch.tensor(prior, dtype=torch.float64)
            self.prior_ready = True
            return
        self.prior_ready = False  # a state from before the prior: recomputed next update
        if self.uses_prior():
            log.warning("this ASWL state predates the LAMP prior (the default until then was "
                        "a uniform start); it continues with prior=lamp. To continue it as "
                        "it was trained, set method.prior=uniform")
