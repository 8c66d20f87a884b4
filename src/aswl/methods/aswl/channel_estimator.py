"""Channel ASWL's estimator (:class:`ChannelFisher`): the attention learner's plug
(:class:`aswl.methods.aswl.learner.Estimator`) at channel granularity.

For each channel the backward pass through the first mask on its path gives the first-order
loss change of removing (or restoring) it for each sample, s_n = sum(g * y) over the
channel's positions (y: the channel's unmasked output, g: the loss gradient there); the
Fisher estimate 0.5 * sum_n s_n^2 (Molchanov et al. 2017/2019) is its expected loss increase.
It is observed on OBSERVATIONS backward passes per attention interval. At each attention
step, the mean of that estimate over the kept channels nearest the group's cut (``band``),
divided by the cost of one channel of the group, is the group's value of one more unit of
cost (masked channels are left out: a ReLU after the mask gives them no gradient, so their
estimate would read zero); the attention gradient is minus its log ratio to the groups'
geometric mean (clamped to [-3, 3]), so a group whose channels are worth more than average
per FLOP (or parameter) gains channels and one worth less gives them up: at the optimum of a
budgeted split the marginal values per unit cost are equal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor

from aswl.methods.aswl.learner import AttentionLearner, Estimator
from aswl.sparse.schedules import Every

if TYPE_CHECKING:
    from aswl.methods.channel_aswl import ASWLChannel

OBSERVATIONS = 8
"""Backward passes observed per attention interval (the others cost nothing extra)."""


class ChannelFisher(Estimator):
    """The per-channel Fisher saliency of :mod:`this module
    <aswl.methods.aswl.channel_estimator>`, fed by observers on the channel mask hooks."""

    def __init__(self, method: ASWLChannel) -> None:
        self.method = method
        self.saliency = torch.zeros(sum(g.size for g in method.groups), dtype=torch.float64)
        """Each channel's Fisher estimate summed over the observed passes of this interval."""
        self.offsets = [0]
        for group in method.groups:
            self.offsets.append(self.offsets[-1] + group.size)
        self.batch: dict[int, Tensor] = {}
        """This backward pass's per-sample terms, by group index."""
        self.observed_steps = 0
        self.timing = Every(1)
        """The backward passes observed: OBSERVATIONS per attention interval (set at attach)."""
        self.observers: dict[int, Any] = {}

    def attach(self, learner: AttentionLearner) -> None:
        self.timing = Every(max(1, learner.timing.interval // OBSERVATIONS))
        self.observers = {id(hook): self.observer(index, hook.channel_dim)
                          for index, group in enumerate(self.method.groups)
                          for hook in self.method.hooks[group.name]}
        self.arm()

    def arm(self) -> None:
        """Observe the next step's backward pass only when it is one of the sampled steps."""
        method = self.method
        on = not method.frozen and self.timing.due(method.step_count + 1)
        for hooks in method.hooks.values():
            for hook in hooks:
                hook.observe = self.observers[id(hook)] if on else None

    def observer(self, index: int, dim: int) -> Any:
        def observe(grad: Tensor, output: Tensor) -> None:
            if self.method.frozen:
                return
            with torch.no_grad():
                product = (grad * output).movedim(dim, -1)
                per_sample = product.reshape(product.shape[0], -1, product.shape[-1]).sum(1)
                previous = self.batch.get(index)
                self.batch[index] = per_sample if previous is None else previous + per_sample
        return observe

    def after_backward(self, learner: AttentionLearner) -> None:
        """Fold this batch's per-sample channel terms into the Fisher saliency."""
        if self.method.frozen or not self.batch:
            self.batch.clear()
            return
        for index, per_sample in self.batch.items():
            start = self.offsets[index]
            fisher = 0.5 * per_sample.double().square().sum(0).cpu()
            self.saliency[start:start + fisher.numel()] += fisher
        self.batch.clear()
        self.observed_steps += 1

    def before_step(self, learner: AttentionLearner) -> None:
        """At an attention step (with passes observed since the last): each group's value
        (the band's mean saliency) to the learner, then a new interval."""
        method = self.method
        if method.frozen or not learner.due() or not self.observed_steps:
            return
        counts = [int(m.sum()) for m in method.channel_masks.values()]
        value = torch.zeros(len(method.groups), dtype=torch.float64)
        for i, (group, score, keep) in enumerate(zip(method.groups, method.channel_scores(),
                                                     counts)):
            order = score.argsort(descending=True)
            width = max(1, round(method.config.band * group.size))
            band = order[max(0, keep - width):keep]  # the kept channels nearest the cut
            start = self.offsets[i]
            value[i] = self.saliency[start:start + group.size][band].mean()
        self.saliency.zero_()
        self.observed_steps = 0
        learner.learn(value, self.gradient)

    def gradient(self, value: Tensor) -> Tensor:
        """Minus each group's log value per unit cost against the geometric mean, in
        [-3, 3]."""
        method = self.method
        per_cost = value / method.cost.per_channel(method.densities(),
                                                   method.sizes).clamp_min(1e-12)
        log_ratio = per_cost.clamp_min(1e-30).log()
        return -(log_ratio - log_ratio.mean()).clamp(-3.0, 3.0)

    def state_dict(self) -> dict[str, Any]:
        return {"saliency": self.saliency.tolist(), "observed_steps": self.observed_steps}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.saliency = torch.tensor(state["saliency"], dtype=torch.float64)
        self.observed_steps = int(state["observed_steps"])
