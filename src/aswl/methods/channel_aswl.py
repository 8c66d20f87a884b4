"""ASWL at channel granularity (``structure='channel'``): one learned attention per coupled
channel group sets the fraction of its channels the group keeps.

The attention a_g gives the group's raw kept fraction 1 - (1 - a_g)^alpha (equation 2 of
He, Shi & Dong 2021, arXiv 2111.02399, with channels as the unit); one shared scale projects
the raw fractions onto the budget (FLOPs or parameters removed), so the model ends at the
requested reduction while the attentions decide where it comes from. Channels inside a group
are ranked by the L2 norm of their weights (producers and BatchNorm scale).

The attentions learn as in weight mode, from the same attention learner
(:mod:`aswl.methods.aswl.learner`: optimiser, timing, the clamped step, the skip of a
non-finite estimate), with the loss-aware estimate carried over to channels: the Fisher
saliency of :mod:`aswl.methods.aswl.channel_estimator` (per-sample g * y at the channel masks,
the band of kept channels nearest each group's cut, value per unit cost, a clamped log-ratio
gradient). Its own numbers: ``attention_lr`` 0.02, ATTENTION_UPDATES // 4 updates over the
ramp, the floor ATTENTION_MIN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from aswl.methods.aswl.channel_estimator import ChannelFisher
from aswl.methods.aswl.config import ATTENTION_MIN, ATTENTION_UPDATES, AttentionFields
from aswl.methods.aswl.learner import AttentionLearner
from aswl.methods.base import check, register_method
from aswl.methods.channel import ChannelConfig, ChannelMethod

UPDATES = ATTENTION_UPDATES // 4
"""Attention updates over the ramp when ``attention_interval`` is None (128: each averages
the Fisher estimate of OBSERVATIONS backward passes)."""


@dataclass
class ASWLChannelConfig(ChannelConfig, AttentionFields):
    """The attention fields (per coupled channel group: equal attentions give a uniform
    split; p = (1 - a)^alpha is the group's raw removed fraction; Adam on the attentions
    unless ``attention_optimizer`` says otherwise)."""

    attention_lr: float = 0.02
    band: float = 0.25
    """Fraction of a group's channels (the kept ones nearest its cut) the estimate averages
    over."""

    def validate(self) -> None:
        super().validate()
        self.check_attention()
        check(0.0 < self.band <= 1.0, "band", self.band, "a fraction in (0, 1]")


@register_method("aswl", structure="channel", aliases=("aswl_channel",))
class ASWLChannel(ChannelMethod):
    """ASWL with channels as the unit (He, Shi & Dong 2021, arXiv 2111.02399); see the
    module docstring."""

    config_class = ASWLChannelConfig
    config: ASWLChannelConfig

    def on_attach(self) -> None:
        cfg = self.config
        self.attention = nn.Parameter(torch.full((len(self.groups),), float(cfg.init_attention)))
        self.estimator = ChannelFisher(self)
        self.learner = AttentionLearner(self, self.estimator, UPDATES, floor=ATTENTION_MIN)
        """The attentions' optimiser, timing and step (:mod:`aswl.methods.aswl.learner`)."""
        self.learner.attach()

    def parameters(self) -> list[nn.Parameter]:
        return [self.attention]

    def optimizers(self) -> list[torch.optim.Optimizer]:
        assert self.learner.optimizer is not None
        return [self.learner.optimizer]

    def attentions(self) -> dict[str, float]:
        values = self.attention.detach().tolist()
        return {p: a for g, a in zip(self.groups, values) for p in g.producers}

    def group_densities(self) -> Tensor:
        base = (1.0 - self.attention.detach().double()).clamp_min(0.0)
        return (1.0 - base ** self.config.alpha).clamp_min(1e-6)

    def after_backward(self) -> None:
        self.learner.observe()

    def step(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        self.learner.step()
        super().step(optimizer)
        self.estimator.arm()

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "attention": self.attention.detach().cpu().tolist(),
                **self.learner.state_dict()}

    def _load(self, state: dict[str, Any]) -> None:
        super()._load(state)
        with torch.no_grad():
            self.attention.copy_(torch.tensor(state["attention"]))
        self.learner.load_state_dict(state)
        self.estimator.arm()
