"""ASWL's loss-aware estimate of each layer's marginal loss: the band statistic.

Restoring a pruned weight w_j changes the loss by about g_j * w_j, and pruning a kept one by
about -g_j * w_j (g: the gradient at the sparse weights, which the straight-through mask gives
for every weight). The average of g_j * w_j over the *band* of weights whose magnitudes
straddle the layer's threshold (``band`` of its weights, on a fixed sample of at most 4,096),
times the layer size, estimates the change of the loss per unit of kept fraction: a soft-mask
surrogate of the threshold gradient. The statistic is accumulated over the steps between two
attention updates; :meth:`BandEstimator.read` returns its mean and starts a new interval.

Observers (:meth:`BandEstimator.observe`) see every statistic that is read, so a trace tool
needs no access to the method's internals (``benchmarks/trace_split.py``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from aswl.sparse import dense_weight
from aswl.sparse.threshold import sample_indices, take

ESTIMATOR_SAMPLE = 4096
"""Weights per layer (a fixed random sample) the estimator looks at."""

Observer = Callable[["BandEstimator", Tensor], None]


class BandEstimator:
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
