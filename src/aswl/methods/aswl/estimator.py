"""ASWL's loss-aware estimate of each layer's marginal loss: the band statistic.

Restoring a pruned weight w_j changes the loss by about g_j * w_j, and pruning a kept one by
about -g_j * w_j (g: the gradient at the sparse weights, which the straight-through mask gives
for every weight). The average of g_j * w_j over the *band* of weights whose magnitudes
straddle the layer's threshold (``band`` of its weights, on a fixed sample of at most 4,096),
times the layer size, estimates the change of the loss per unit of kept fraction: a soft-mask
surrogate of the threshold gradient. The statistic is accumulated over the steps between two
attention updates; :meth:`BandEstimator.read` returns its mean and starts a new interval.

It is weight mode's plug of the attention learner (:class:`aswl.methods.aswl.learner.Estimator`):
the statistic is accumulated after backward on every mask-update step and, every attention
interval, read and carried to the attentions through the densities
(:meth:`BandEstimator.gradient`); the method refreshes the bands after a mask update
(:meth:`BandEstimator.bands_due`, :meth:`BandEstimator.set_bands`).

Observers (:meth:`BandEstimator.observe`) see every statistic that is read, so a trace tool
needs no access to the method's internals (``benchmarks/trace_split.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, cast

import torch
from torch import Tensor, nn

from aswl.methods.aswl.learner import AttentionLearner, Estimator
from aswl.sparse import dense_weight
from aswl.sparse.threshold import sample_indices, take

if TYPE_CHECKING:
    from aswl.methods.aswl.common import ASWLBase

ESTIMATOR_SAMPLE = 4096
"""Weights per layer (a fixed random sample) the estimator looks at."""

Observer = Callable[["BandEstimator", Tensor], None]


class BandEstimator(Estimator):
    """The band statistic of :mod:`this module <aswl.methods.aswl.estimator>`, with its own
    state (bands and the running sums)."""

    def __init__(self, layers: dict[str, nn.Module], band: float) -> None:
        self.layers = layers
        self.band = band
        self.samples = sample_indices({n: m.weight.numel() for n, m in layers.items()},
                                      {n: m.weight.device for n, m in layers.items()},
                                      ESTIMATOR_SAMPLE)
        self.bands: dict[str, tuple[Tensor, Tensor]] = {}
        """Each layer's magnitude interval (low, high) around its threshold."""
        self.total = torch.zeros(len(layers))
        self.count = torch.zeros(len(layers))
        self.observers: list[Observer] = []

    def observe(self, observer: Observer) -> None:
        """Call ``observer(estimator, statistic)`` with every statistic :meth:`read` returns
        (a tensor of one mean per layer, in layer order), before the sums are reset (so
        ``estimator.count`` is the number of band weights behind each mean)."""
        self.observers.append(observer)

    def sample(self, name: str, tensor: Tensor) -> Tensor:
        """The estimator's fixed sample of a layer's tensor (weights or gradients)."""
        return take(tensor, self.samples[name])

    def set_band(self, name: str, magnitude: Tensor, pruned: float) -> None:
        """The band of layer ``name``: the magnitudes of its sample between the quantiles
        ``pruned -/+ band / 2`` (``pruned``: the fraction of the layer that is pruned)."""
        sample = self.sample(name, magnitude).float()
        size = sample.numel()
        half = self.band / 2
        lo, hi = (torch.kthvalue(sample, min(size, max(1, round(q * size)))).values
                  for q in (pruned - half, pruned + half))
        self.bands[name] = (lo, hi)

    def in_band(self, name: str, magnitude: Tensor) -> Tensor:
        """Which of the layer's sampled weights (their ``magnitude``) the statistic averages
        over: those within its band."""
        low, high = self.bands[name]
        return (magnitude >= low) & (magnitude <= high)

    def accumulate(self) -> None:
        """Add this step's g * w over each layer's band to the running sums."""
        with torch.no_grad():
            for i, (name, module) in enumerate(self.layers.items()):
                weight = dense_weight(module)
                if weight.grad is None or name not in self.bands:
                    continue
                sample = self.sample(name, weight.detach()).float()
                grad = self.sample(name, weight.grad).float()
                band = self.in_band(name, sample.abs())
                value = grad * sample
                if self.total.device != value.device:
                    self.total = self.total.to(value.device)
                    self.count = self.count.to(value.device)
                self.total[i] += (value * band).sum()
                self.count[i] += band.sum()

    def read(self) -> Tensor:
        """The mean statistic per layer since the last read (then reset); observers see it."""
        mean = self.total / self.count.clamp_min(1.0)
        for observer in self.observers:  # before the reset: they may read ``count``
            observer(self, mean)
        self.total.zero_()
        self.count.zero_()
        return mean

    # ------------------------------------------------------------------ the learner's plug
    def after_backward(self, learner: AttentionLearner) -> None:
        """The statistic on every mask-update step, turned into an attention gradient every
        attention interval."""
        method = cast("ASWLBase", learner.method)
        if method.frozen:
            return
        step_now = learner.due()
        if step_now or method.schedule.update_due(method.step_count + 1):
            self.accumulate()
        if step_now:
            learner.learn(self.read(), lambda mean: self.gradient(method, mean))

    @staticmethod
    def gradient(method: ASWLBase, mean: Tensor) -> Tensor | None:
        """dL/d(density) per layer (``mean`` times the layer size), carried to a_l through
        the densities: the gradient of sum_l density_l * marginal_l (None: every layer is
        clamped, nothing to learn now)."""
        attention = method.attention_vector().detach().requires_grad_(True)
        with torch.enable_grad():
            density = method.density_vector(attention)
            marginal = mean.to(density.device, density.dtype) * method._numel(density)
            surrogate = (density * marginal).sum()
            if not surrogate.requires_grad:
                return None
            (grad,) = torch.autograd.grad(surrogate, attention)
        return grad

    def bands_due(self, learner: AttentionLearner) -> bool:
        """Refresh the bands after this mask update (none yet, or the start of an attention
        interval)?"""
        return not self.bands or learner.timing.due(learner.method.step_count)

    def set_bands(self, method: ASWLBase) -> None:
        """Each layer's band around its new threshold."""
        with torch.no_grad():
            for name, module in method.layers.items():
                self.set_band(name, method.scores(name, module),
                              1.0 - method.kept[name] / method.numels[name])

    @staticmethod
    def blank_state(layers: int) -> dict[str, Any]:
        """The state of an estimator that never ran (saved by a method without one)."""
        return {"bands": {}, "statistic": [[0.0] * layers, [0.0] * layers]}

    def state_dict(self) -> dict[str, Any]:
        return {"bands": {k: [float(v[0]), float(v[1])] for k, v in self.bands.items()},
                "statistic": [self.total.cpu().tolist(), self.count.cpu().tolist()]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        device = self.total.device
        self.bands = {k: (torch.tensor(float(v[0]), device=device),
                          torch.tensor(float(v[1]), device=device))
                      for k, v in state.get("bands", {}).items()}
        if "statistic" in state:
            total, count = state["statistic"]
            self.total = torch.tensor(total, dtype=torch.float32, device=device)
            self.count = torch.tensor(count, dtype=torch.float32, device=device)
