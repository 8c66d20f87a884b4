"""ASWL's attention learner, written once: the attentions' optimiser, the loss-aware band
estimator (:mod:`aswl.methods.aswl.estimator`) and when the attentions step. The method
(:class:`~aswl.methods.aswl.common.ASWLBase`) owns one (``method.learner``) and calls it from
its contract hooks: ``on_attach`` (:meth:`AttentionLearner.attach`), ``after_backward``
(:meth:`~AttentionLearner.observe`), ``step`` (:meth:`~AttentionLearner.step`) and the
mask update (:meth:`~AttentionLearner.bands_due`, :meth:`~AttentionLearner.set_bands`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from aswl.methods.aswl.config import ATTENTION_MIN, ATTENTION_UPDATES
from aswl.methods.aswl.estimator import BandEstimator
from aswl.sparse.schedules import Every

if TYPE_CHECKING:
    from aswl.methods.aswl.common import ASWLBase


class AttentionLearner:
    """The attentions' optimiser, estimator and timing (see the module docstring)."""

    def __init__(self, method: ASWLBase) -> None:
        cfg = method.config
        self.method = method
        self.floor = max(ATTENTION_MIN, 1.0 - cfg.ratio_cap ** (1.0 / cfg.alpha))
        """Lowest attention: below it p is capped anyway (the gradient through the cap is 0),
        or the fixed lower end of the range (0.01)."""
        self.timing = (Every(cfg.attention_interval) if cfg.attention_interval else
                       Every.spread(method.schedule.ramp_steps(), cfg.mask_interval,
                                    ATTENTION_UPDATES))
        """When the attentions step (about ATTENTION_UPDATES over the ramp, on mask-update
        steps only, unless ``attention_interval`` is set)."""
        self.estimator = BandEstimator(method.layers, cfg.band) if method.loss_aware else None
        """The loss-aware band statistic (None: the attentions learn from the loss only)."""
        self.optimizer: torch.optim.Optimizer | None = None
        """The attentions' optimiser (built by :meth:`attach`)."""

    def attach(self) -> torch.optim.Optimizer:
        """Build the attentions' optimiser (``attention_optimizer``)."""
        cfg, params = self.method.config, self.method.parameters()
        if cfg.attention_optimizer == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=cfg.attention_lr,
                                             momentum=cfg.attention_momentum)
        else:
            self.optimizer = torch.optim.Adam(params, lr=cfg.attention_lr)
        return self.optimizer

    # ------------------------------------------------------------------ the estimator
    def bands_due(self) -> bool:
        """Refresh the estimator's bands after this mask update (none yet, or the start of
        an attention interval)?"""
        return self.estimator is not None and (
            not self.estimator.bands or self.timing.due(self.method.step_count))

    def set_bands(self) -> None:
        """Each layer's band around its new threshold."""
        method = self.method
        assert self.estimator is not None
        with torch.no_grad():
            for name, module in method.layers.items():
                self.estimator.set_band(name, method.scores(name, module),
                                        1.0 - method.kept[name] / method.numels[name])

    def observe(self) -> None:
        """After backward: the estimator's statistic on every mask-update step, turned into
        an attention gradient every ``attention_interval`` steps."""
        method = self.method
        if self.estimator is None or method.frozen:
            return
        step_now = self.timing.due(method.step_count + 1)
        if step_now or method.schedule.update_due(method.step_count + 1):
            self.estimator.accumulate()
        if step_now:
            self.add_gradient(self.estimator.read())

    def add_gradient(self, mean: Tensor) -> None:
        """dL/d(density) per layer (``mean`` times the layer size), carried to a_l through
        the densities: the gradient of sum_l density_l * marginal_l."""
        method = self.method
        if not bool(torch.isfinite(mean).all()):
            method.note_nonfinite("non-finite gradient: attention update skipped")
            return
        attention = method.attention_vector().detach().requires_grad_(True)
        with torch.enable_grad():
            density = method.density_vector(attention)
            marginal = mean.to(density.device, density.dtype) * method._numel(density)
            surrogate = (density * marginal).sum()
            if not surrogate.requires_grad:  # every layer clamped: nothing to learn now
                return
            (grad,) = torch.autograd.grad(surrogate, attention)
        for name, value in zip(method.layers, grad):
            param = method.masks[name].attention
            param.grad = value.detach() if param.grad is None else param.grad + value.detach()

    # ------------------------------------------------------------------ the step
    def step(self) -> None:
        """Attention step when any attention has a gradient, clip to [floor, 1], the
        allocator's adjustment, then the gradients cleared."""
        method = self.method
        params = method.parameters()
        if method.frozen or all(p.grad is None for p in params):
            return
        assert self.optimizer is not None
        self.optimizer.step()
        with torch.no_grad():
            for param in params:
                param.clamp_(self.floor, 1.0)
            method.allocator.after_attention_step()
        method.zero_grad()

    # ------------------------------------------------------------------ state
    def state_dict(self) -> dict[str, Any]:
        assert self.optimizer is not None
        count = len(self.method.layers)
        estimator = self.estimator.state_dict() if self.estimator is not None else {
            "bands": {}, "statistic": [[0.0] * count, [0.0] * count]}
        return {"attention_optimizer": self.optimizer.state_dict(), **estimator}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        assert self.optimizer is not None
        self.optimizer.load_state_dict(state["attention_optimizer"])
        if self.estimator is not None:
            self.estimator.load_state_dict(state)
