"""Scores and per-layer counts to masks: exact top-k, or a fast approximate top-k whose
threshold is read off a fixed random sample of each layer's scores.

:class:`LayerMasks` is the one place where a method's per-layer scores and kept counts become
masks (``SparseMethod.set_masks`` calls it). By default every mask is an exact top-k. With a
``sample_size`` a layer larger than the sample may instead take, when the caller asks for an
approximate update, the threshold ``kthvalue`` (linear time) of a fixed random sample of its
scores: its kept count is then approximate, and the cost is about one comparison per weight.
The threshold of each layer is remembered, so :meth:`LayerMasks.rethreshold` can re-apply it
to moved weights without any count. ``units`` names the layers in which every output unit
(row of the weight) keeps at least its largest-scoring weight.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from aswl.sparse.masked import topk_mask

SAMPLE_SEED = 20211103
"""Seed of the generator that draws the fixed samples (the same on every rank and resume)."""
MIN_SAMPLED_KEPT = 64
"""Fewer kept weights than this in a layer's sample: its mask is exact (a sampled threshold
would be too coarse)."""


def sample_indices(numels: dict[str, int], devices: dict[str, torch.device], size: int,
                   seed: int = SAMPLE_SEED) -> dict[str, Tensor | None]:
    """A fixed random subset of at most ``size`` of each layer's entries (None: all of them).

    Drawn once, in the order of ``numels``, from a generator with a constant seed, so it is
    the same on every rank and after a resume; random rather than strided, since a stride
    aliases with the layout of the weight (e.g. the same pixel column of every row).
    """
    generator = torch.Generator().manual_seed(seed)
    samples: dict[str, Tensor | None] = {}
    for name, numel in numels.items():
        samples[name] = None if numel <= size else torch.randperm(
            numel, generator=generator)[:size].sort().values.to(devices[name])
    return samples


def take(tensor: Tensor, index: Tensor | None) -> Tensor:
    """The entries of ``tensor`` (flattened) at ``index`` (None: all of them)."""
    flat = tensor.reshape(-1)
    return flat if index is None else flat.index_select(0, index)


class LayerMasks:
    """Per-layer masks from scores and kept counts (see the module docstring)."""

    def __init__(self, numels: dict[str, int], devices: dict[str, torch.device],
                 sample_size: int | None = None, units: set[str] | None = None) -> None:
        self.numels = numels
        self.index = ({} if sample_size is None
                      else sample_indices(numels, devices, sample_size))
        """Each layer's fixed sample for approximate thresholds (absent: exact only)."""
        self.units = units or set()
        self.thresholds: dict[str, Tensor] = {}
        """Each layer's score threshold at its last counted update (approximate mode)."""
        self.unit_index: dict[str, Tensor] = {}

    def set(self, name: str, mask: Tensor, scores: Tensor, keep: int,
            exact: bool = True) -> None:
        """Write layer ``name``'s mask keeping ``keep`` of ``scores`` (approximately unless
        ``exact``, when the layer has a sample and the sample keeps enough entries)."""
        numel = self.numels[name]
        index = self.index.get(name)
        size = numel if index is None else index.numel()
        kept_in_sample = keep / numel * size
        if (exact or keep >= numel or name not in self.index
                or (index is not None and kept_in_sample < MIN_SAMPLED_KEPT)):
            forced = self.keep_units(name, scores)
            ranked = scores if forced is None else scores.masked_fill(forced, float("inf"))
            mask.copy_(topk_mask(ranked, keep))
            if self.index:  # remembered for rethreshold (approximate mode only)
                self.thresholds[name] = ranked.masked_fill(~mask, float("inf")).min()
            return
        sample = take(scores, index)
        rank = min(size, max(1, size - round(kept_in_sample) + 1))
        threshold = torch.kthvalue(sample, rank).values
        torch.ge(scores, threshold, out=mask)
        self.keep_units(name, scores, mask)
        self.thresholds[name] = threshold

    def ready(self) -> bool:
        """Every layer has a threshold to re-apply."""
        return bool(self.index) and len(self.thresholds) == len(self.numels)

    def rethreshold(self, name: str, mask: Tensor, scores: Tensor) -> None:
        """The layer's last threshold applied to new scores (no count, one pass)."""
        torch.ge(scores, self.thresholds[name], out=mask)
        self.keep_units(name, scores, mask, again=True)

    def keep_units(self, name: str, scores: Tensor, mask: Tensor | None = None,
                   again: bool = False) -> Tensor | None:
        """Each row's largest score (layers in ``units``): set in ``mask`` if given, and
        returned as a mask of its own when not. None for the other layers. ``again``: the
        rows' largest entries found at the last counted update (no pass over the layer)."""
        if name not in self.units or scores.dim() < 2:
            return None
        rows = scores.reshape(scores.shape[0], -1)
        best = self.unit_index.get(name) if again else None
        if best is None or best.device != scores.device:
            best = rows.argmax(dim=1, keepdim=True)
            self.unit_index[name] = best
        if mask is not None and mask.is_contiguous():
            mask.view(rows.shape).scatter_(1, best, True)
            return mask
        forced = torch.zeros(rows.shape, dtype=torch.bool, device=scores.device)
        forced = forced.scatter_(1, best, True).view(scores.shape)
        return forced if mask is None else mask.logical_or_(forced)

    def state_dict(self) -> dict[str, Any]:
        return {"thresholds": {k: float(v) for k, v in self.thresholds.items()},
                "unit_index": {k: v.reshape(-1).cpu().tolist()
                               for k, v in self.unit_index.items()}}

    def load_state_dict(self, state: dict[str, Any], devices: dict[str, torch.device]) -> None:
        self.thresholds = {k: torch.tensor(float(v), device=devices[k])
                           for k, v in state.get("thresholds", {}).items()}
        self.unit_index = {k: torch.tensor(v, dtype=torch.long, device=devices[k]).reshape(-1, 1)
                           for k, v in state.get("unit_index", {}).items() if k in devices}
