"""ASWL's attention learner, written once for every variant (weight and channel granularity):
the attentions' optimiser (``attention_optimizer``, ``attention_lr``), when they step
(``attention_interval``, or the variant's number of updates spread over the ramp), the step
itself (clamped to [floor, 1]), the skip of a non-finite estimate and the state. What the
attentions learn from is a pluggable :class:`Estimator`: the band statistic of weight mode
(:class:`aswl.methods.aswl.estimator.BandEstimator`, its gradient carried to the attentions
through the densities) or the Fisher saliency of channel mode
(:class:`aswl.methods.aswl.channel_estimator.ChannelFisher`).

The method owns one (``method.learner``) and calls it from its contract hooks: ``on_attach``
(:meth:`AttentionLearner.attach`), ``after_backward`` (:meth:`~AttentionLearner.observe`) and
``step`` (:meth:`~AttentionLearner.step`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from aswl.sparse.schedules import Every

if TYPE_CHECKING:
    from aswl.methods.base import SparseMethod


class Estimator:
    """What the attentions learn from: a plug of :class:`AttentionLearner` (each hook does
    nothing here). It hands the learner a statistic and how to turn it into the attentions'
    gradient (:meth:`AttentionLearner.learn`), after a backward pass or before a step."""

    def attach(self, learner: AttentionLearner) -> None:
        """The method is attached (its hooks exist)."""

    def after_backward(self, learner: AttentionLearner) -> None:
        """After every backward pass (the method's ``after_backward``)."""

    def before_step(self, learner: AttentionLearner) -> None:
        """Before the attentions' step (the method's ``step``)."""

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state_dict`."""


class AttentionLearner:
    """The attentions' optimiser, timing and step; the estimator is a plug (see the module
    docstring). ``updates``: attention steps over the ramp when ``attention_interval`` is
    None; ``floor``: the lowest attention."""

    def __init__(self, method: SparseMethod, estimator: Estimator | None, updates: int,
                 floor: float) -> None:
        cfg: Any = method.config  # an AttentionFields config
        self.method = method
        self.estimator = estimator
        """What the attentions learn from (None: from the loss only, through autograd)."""
        self.floor = floor
        """Lowest attention (the step clamps to [floor, 1])."""
        self.timing = (Every(cfg.attention_interval) if cfg.attention_interval else
                       Every.spread(method.schedule.ramp_steps(), cfg.mask_interval, updates))
        """When the attentions step (about ``updates`` over the ramp, on mask-update steps
        only, unless ``attention_interval`` is set)."""
        self.optimizer: torch.optim.Optimizer | None = None
        """The attentions' optimiser (built by :meth:`attach`)."""

    def attach(self) -> torch.optim.Optimizer:
        """Build the attentions' optimiser (``attention_optimizer``), then the estimator's
        hooks."""
        cfg: Any = self.method.config
        params = self.method.parameters()
        if cfg.attention_optimizer == "sgd":
            self.optimizer = torch.optim.SGD(params, lr=cfg.attention_lr,
                                             momentum=cfg.attention_momentum)
        else:
            self.optimizer = torch.optim.Adam(params, lr=cfg.attention_lr)
        if self.estimator is not None:
            self.estimator.attach(self)
        return self.optimizer

    def due(self) -> bool:
        """Do the attentions step after this backward pass (the step about to be taken)?"""
        return self.timing.due(self.method.step_count + 1)

    def observe(self) -> None:
        """After backward: the estimator's turn."""
        if self.estimator is not None:
            self.estimator.after_backward(self)

    def learn(self, statistic: Tensor, gradient: Callable[[Tensor], Tensor | None]) -> None:
        """Add ``gradient(statistic)`` (one value per attention, in the order of
        ``method.parameters()``; None: nothing to learn now) to the attentions' gradients.
        A non-finite statistic (diverging training) skips this update: the attentions keep
        their split, and the method counts the step (``note_nonfinite``)."""
        if not bool(torch.isfinite(statistic).all()):
            self.method.note_nonfinite("non-finite gradient: attention update skipped")
            return
        grad = gradient(statistic)
        if grad is None:
            return
        params = self.method.parameters()
        for param, value in zip(params, grad.detach().split([p.numel() for p in params])):
            value = value.reshape(param.shape).to(param.device, param.dtype)
            param.grad = value if param.grad is None else param.grad + value

    def step(self) -> bool:
        """The estimator's turn, then the attention step when any attention has a gradient:
        clip to [floor, 1], gradients cleared. True when the attentions stepped."""
        method = self.method
        if self.estimator is not None:
            self.estimator.before_step(self)
        params = method.parameters()
        if method.frozen or all(p.grad is None for p in params):
            return False
        assert self.optimizer is not None
        self.optimizer.step()
        with torch.no_grad():
            for param in params:
                param.clamp_(self.floor, 1.0)
        method.zero_grad()
        return True

    def state_dict(self) -> dict[str, Any]:
        assert self.optimizer is not None
        estimator = self.estimator.state_dict() if self.estimator is not None else {}
        return {"attention_optimizer": self.optimizer.state_dict(), **estimator}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        assert self.optimizer is not None
        self.optimizer.load_state_dict(state["attention_optimizer"])
        if self.estimator is not None:
            self.estimator.load_state_dict(state)
