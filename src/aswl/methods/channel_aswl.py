"""ASWL at channel granularity (``structure='channel'``): one learned attention per coupled
channel group sets the fraction of its channels the group keeps.

The attention a_g gives the group's raw kept fraction 1 - (1 - a_g)^alpha (equation 2 of
He, Shi & Dong 2021, arXiv 2111.02399, with channels as the unit); one shared scale projects
the raw fractions onto the budget (FLOPs or parameters removed), so the model ends at the
requested reduction while the attentions decide where it comes from. Channels inside a group
are ranked by the L2 norm of their weights (producers and BatchNorm scale).

How the attentions learn: the loss-aware estimate of the weight-level ASWL carried over to
channels. For each channel the backward pass through its straight-through mask gives the
first-order loss change of removing (or restoring) it for each sample, s_n = sum(g * y) over
the channel's positions (y: the channel's unmasked output, g: the loss gradient there); the
Fisher estimate 0.5 * sum_n s_n^2 (Molchanov et al. 2017/2019) is its expected loss increase.
Every ``attention_interval`` steps, the mean of that estimate over the kept channels nearest
the group's cut (``band``), divided by the cost of one channel of the group, is the group's
value of one more unit of cost (masked channels are left out: a ReLU after the mask gives
them no gradient, so their estimate would read zero); the attention gradient is minus its
log ratio to the groups' geometric mean, so a group whose channels are worth more than
average per FLOP (or parameter) gains channels and one worth less gives them up: at the
optimum of a budgeted split the marginal values per unit cost are equal.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from aswl.methods.aswl.config import ATTENTION_MIN, check_attention_fields
from aswl.methods.base import check, register_method
from aswl.methods.channel import ChannelConfig, ChannelMethod
from aswl.methods.registry import CHANNEL_VARIANTS

log = logging.getLogger(__name__)

ATTENTION_UPDATES = 128
"""Attention updates over the ramp when ``attention_interval`` is None."""
OBSERVATIONS = 8
"""Backward passes observed per attention interval (the others cost nothing extra)."""


@dataclass
class ASWLChannelConfig(ChannelConfig):
    alpha: float = 1.0
    """Pruning factor: p = (1 - a)^alpha, the group's raw removed fraction."""
    init_attention: float = 0.5
    """Starting attention of every group (equal attentions: a uniform split)."""
    attention_lr: float = 0.02
    """Learning rate of the attentions' Adam optimiser."""
    attention_interval: int | None = None
    """Steps between attention updates (None: about 128 over the ramp)."""
    band: float = 0.25
    """Fraction of a group's channels (the kept ones nearest its cut) the estimate averages
    over."""

    def validate(self) -> None:
        super().validate()
        check_attention_fields(self)
        check(self.attention_interval is None or self.attention_interval >= 1,
              "attention_interval", self.attention_interval, "null or an integer >= 1")
        check(0.0 < self.band <= 1.0, "band", self.band, "a fraction in (0, 1]")


@register_method("aswl_channel")
class ASWLChannel(ChannelMethod):
    """ASWL with channels as the unit (He, Shi & Dong 2021, arXiv 2111.02399); see the
    module docstring."""

    config_class = ASWLChannelConfig
    config: ASWLChannelConfig

    def on_attach(self) -> None:
        cfg = self.config
        self.attention = nn.Parameter(torch.full((len(self.groups),), float(cfg.init_attention)))
        self.optimizer = torch.optim.Adam([self.attention], lr=cfg.attention_lr)
        ramp = getattr(self.schedule, "end_step", 0) - getattr(self.schedule, "begin_step", 0)
        every = cfg.mask_interval
        self.attention_interval = cfg.attention_interval or every * max(
            1, round(ramp / ATTENTION_UPDATES / every))
        self.saliency = torch.zeros(sum(g.size for g in self.groups), dtype=torch.float64)
        self.offsets = [0]
        for group in self.groups:
            self.offsets.append(self.offsets[-1] + group.size)
        self._batch: dict[int, Tensor] = {}
        self.observed_steps = 0
        self.observe_every = max(1, self.attention_interval // OBSERVATIONS)
        self._observers = {id(hook): self._observer(index, hook.channel_dim)
                           for index, group in enumerate(self.groups)
                           for hook in self.hooks[group.name]}
        self._arm()

    def _arm(self) -> None:
        """Observe the next step's backward pass only when it is one of the sampled steps."""
        on = not self.frozen and (self.step_count + 1) % self.observe_every == 0
        for hooks in self.hooks.values():
            for hook in hooks:
                hook.observe = self._observers[id(hook)] if on else None

    def _observer(self, index: int, dim: int) -> Any:
        def observe(grad: Tensor, output: Tensor) -> None:
            if self.frozen:
                return
            with torch.no_grad():
                product = (grad * output).movedim(dim, -1)
                per_sample = product.reshape(product.shape[0], -1, product.shape[-1]).sum(1)
                previous = self._batch.get(index)
                self._batch[index] = per_sample if previous is None else previous + per_sample
        return observe

    def parameters(self) -> list[nn.Parameter]:
        return [self.attention]

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.optimizer]

    def attentions(self) -> dict[str, float]:
        values = self.attention.detach().tolist()
        return {p: a for g, a in zip(self.groups, values) for p in g.producers}

    def group_densities(self) -> Tensor:
        base = (1.0 - self.attention.detach().double()).clamp_min(0.0)
        return (1.0 - base ** self.config.alpha).clamp_min(1e-6)

    def after_backward(self) -> None:
        """Fold this batch's per-sample channel terms into the Fisher saliency."""
        if self.frozen or not self._batch:
            self._batch.clear()
            return
        for index, per_sample in self._batch.items():
            start = self.offsets[index]
            fisher = 0.5 * per_sample.double().square().sum(0).cpu()
            self.saliency[start:start + fisher.numel()] += fisher
        self._batch.clear()
        self.observed_steps += 1

    def step(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        if not self.frozen and (self.step_count + 1) % self.attention_interval == 0 \
                and self.observed_steps:
            self._attention_step()
        super().step(optimizer)
        self._arm()

    def _attention_step(self) -> None:
        counts = [int(m.sum()) for m in self.channel_masks.values()]
        scores = self.channel_scores()
        value = torch.zeros(len(self.groups), dtype=torch.float64)
        for i, (group, score, keep) in enumerate(zip(self.groups, scores, counts)):
            order = score.argsort(descending=True)
            width = max(1, round(self.config.band * group.size))
            band = order[max(0, keep - width):keep]  # the kept channels nearest the cut
            start = self.offsets[i]
            value[i] = self.saliency[start:start + group.size][band].mean()
        if not bool(torch.isfinite(value).all()):  # diverging training: keep the split
            log.warning("%s: channel saliency is not finite at step %d (the training "
                        "diverges: lower the lr); the attentions skip this update", self.name,
                        self.step_count)
            self.saliency.zero_()
            self.observed_steps = 0
            return
        density = self.densities()
        per_cost = value / self.cost.per_channel(density, self.sizes).clamp_min(1e-12)
        log_ratio = per_cost.clamp_min(1e-30).log()
        grad = -(log_ratio - log_ratio.mean()).clamp(-3.0, 3.0)
        self.attention.grad = grad.float().to(self.attention.device)
        self.optimizer.step()
        self.optimizer.zero_grad(set_to_none=True)
        with torch.no_grad():
            self.attention.clamp_(ATTENTION_MIN, 1.0)
        self.saliency.zero_()
        self.observed_steps = 0

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "attention": self.attention.detach().cpu().tolist(),
                "attention_optimizer": self.optimizer.state_dict(),
                "saliency": self.saliency.tolist(), "observed_steps": self.observed_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        with torch.no_grad():
            self.attention.copy_(torch.tensor(state["attention"]))
        self.optimizer.load_state_dict(state["attention_optimizer"])
        self.saliency = torch.tensor(state["saliency"], dtype=torch.float64)
        self.observed_steps = int(state["observed_steps"])
        self._arm()


CHANNEL_VARIANTS.update({"aswl": "aswl_channel", "aswl_channel": "aswl_channel"})
