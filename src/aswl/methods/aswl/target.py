"""The target variant, ``aswl`` (the default): exactly ``target_sparsity``, a learned split.

The cubic ramp sets the budget; each layer's raw density 1 - p(a_l), times its LAMP density
at that budget (``prior='lamp'``), is projected onto the budget by one shared scale, so the
model has exactly the target at every step, and the attentions learn the split (a
correction to LAMP's) from the loss-aware band estimate
(:mod:`aswl.methods.aswl.estimator`). When the ramp ends, the masks are set exactly at the
target and then frozen with the attentions.
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor, nn

from aswl.methods.aswl.allocation import floor_attentions, project_to_budget
from aswl.methods.aswl.common import ASWLBase
from aswl.methods.aswl.config import ASWLConfig
from aswl.methods.base import ConfigError, register_method
from aswl.methods.lamp import lamp_densities
from aswl.sparse import dense_weight
from aswl.sparse.schedules import Every, Freeze

log = logging.getLogger(__name__)

PRIOR_INTERVAL_MAX = 32
"""``prior='lamp'`` is refreshed with the estimator's bands, and at least this often."""


@register_method("aswl")
class ASWL(ASWLBase):
    """ASWL, target variant (He, Shi & Dong 2021, arXiv 2111.02399, with a target budget);
    see the module docstring and :mod:`aswl.methods.aswl`."""

    config_class = ASWLConfig
    config: ASWLConfig
    min_kept_is_rows = True
    units_before_batchnorm = True

    def __init__(self, model: nn.Module, config: ASWLConfig | None = None,
                 total_steps: int | None = None, **overrides: Any) -> None:
        super().__init__(model, config, total_steps, **overrides)
        self._check_budget()
        self._prior_ready = False
        self.prior_timing = Every(min(self.attention_timing.interval, PRIOR_INTERVAL_MAX))
        """When the prior is refreshed (and at every exact mask update)."""
        self.freeze = Freeze(self.schedule, self.config.freeze_after_ramp)
        """Masks and attentions fixed from the end of the ramp (``freeze_after_ramp``)."""

    def _check_budget(self) -> None:
        cfg = self.config
        budget = (1.0 - cfg.target_sparsity) * self.total_numel
        needed = sum(self.min_counts.values())
        if needed > budget + 0.5:
            raise ConfigError(
                f"method.target_sparsity = {cfg.target_sparsity} leaves {budget:.0f} weights, "
                f"but the layers' minimum counts (method.min_kept) add up to {needed}: lower "
                f"target_sparsity to at most {1.0 - needed / self.total_numel:.5f} or set "
                f"method.min_kept to a smaller number")

    # ------------------------------------------------------------------ the split
    def uses_prior(self) -> bool:
        return self.config.prior == "lamp"

    def density_vector(self, attention: Tensor | None = None) -> Tensor:
        """The raw densities projected onto the scheduled budget (each layer within [its
        floor, 1]); a layer at its floor keeps the gradient it would have if it were free."""
        raw = super().density_vector(attention)
        return project_to_budget(raw, self._numel(raw), 1.0 - self.sparsity_now(), self.floor,
                                 soft_floor=True)

    def _prior_due(self, exact: bool) -> bool:
        return self.uses_prior() and (
            exact or not self._prior_ready or self.prior_timing.due(self.step_count))

    def _refresh_prior(self) -> None:
        """LAMP's per-layer densities at the current budget, from the estimator's fixed
        sample of each layer's dense weights. Refreshed when the estimator's bands are (every
        ``attention_interval`` steps: the attentions change no more often), at least every
        PRIOR_INTERVAL_MAX steps and at every exact mask update."""
        samples = [self.estimator.sample(name, dense_weight(module).detach())
                   for name, module in self.layers.items()]
        kept = (1.0 - self.sparsity_now()) * self.total_numel
        self.prior = lamp_densities(samples, [self.numels[n] for n in self.layers], kept)
        self._prior_ready = True

    def _after_attention_step(self) -> None:
        """The soft floor: raise every attention below the one at which its layer reaches
        its lowest kept fraction at the current budget to exactly that one (not with
        ``scale_output``, where that would rescale the layer's output)."""
        if self.scales_output:
            return
        raw = self.raw_density(self.attention_vector().detach())
        lifted = floor_attentions(raw, self.numel_vector, 1.0 - self.sparsity_now(),
                                  self.floor, self.prior, self.config.alpha)
        for name, value in zip(self.layers, lifted):
            if value is not None:
                self.masks[name].attention.fill_(min(1.0, max(self.attention_floor, value)))

    # ------------------------------------------------------------------ freeze
    def step(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """The shared step; when the schedule is done (``freeze_after_ramp``), exact masks at
        the target, then masks and attentions stay fixed."""
        super().step(optimizer)
        if not self.frozen and self.freeze.due(self.step_count):
            self.update_masks()  # exact: the schedule is done
            self.frozen = True
            self.zero_grad()
            log.debug("masks and attentions frozen at step %d", self.step_count)

    def _load_prior(self, prior: list[float] | None) -> None:
        if prior is not None:
            if self.uses_prior():  # otherwise the factor stays at one
                self.prior = torch.tensor(prior, dtype=torch.float64)
            self._prior_ready = True
            return
        self._prior_ready = False  # a state from before the prior: recomputed next update
        if self.uses_prior():
            log.warning("this ASWL state predates the LAMP prior (the default until then was "
                        "a uniform start); it continues with prior=lamp. To continue it as "
                        "it was trained, set method.prior=uniform")
