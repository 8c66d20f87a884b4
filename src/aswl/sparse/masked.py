"""Masked-weight parametrization: the dense weight is the trained Parameter, ``module.weight``
is its sparse view ``w * mask``.

Built on :mod:`torch.nn.utils.parametrize`: the dense tensor lives at
``module.parametrizations.weight.original`` (the very Parameter the optimiser holds), the mask is
a buffer of the parametrization, so masks and dense weights are both in ``model.state_dict()``.
A method may register its own per-layer parameters on the parametrization module (ASWL puts
its attention there, see :mod:`aswl.methods.aswl`); the engine itself never reads them.

Two gradient modes:

* ``straight_through=True`` (dense-and-sparse tracking, DPF / ASWL): forward on ``w * m``,
  the gradient found there is passed unchanged to the dense ``w``, so pruned weights keep
  learning and may come back.
* ``straight_through=False``: the usual masked gradient ``g * m``; pruned weights are frozen.

Cost: a training step with masks attached should cost what plain PyTorch costs. An all-ones
mask gives the dense weight itself (no multiply, no copy); what the forward pass derives from a
mask (all ones?, kept count, float copy) is recomputed only when the mask changes, detected by
its tensor version counter (``benchmarks/overhead.py`` measures the ratio to plain PyTorch).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize


class StraightThroughMask(torch.autograd.Function):
    """Forward ``w * m``; backward passes the gradient to ``w`` untouched (weights here,
    channel outputs in :mod:`aswl.sparse.channels`)."""

    @staticmethod
    def forward(ctx, weight: Tensor, mask: Tensor) -> Tensor:  # type: ignore[override]
        return weight * mask

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad, None


_CACHE_KEYS = ("_seen", "_all_ones", "_witness", "_count", "_zeroed", "_factor", "_read")


class MaskedWeight(nn.Module):
    """Parametrization ``w -> w * mask`` (the mask a boolean buffer, all ones at first).

    The forward pass reads two things derived from the mask, recomputed only when the mask
    changes (a new tensor, or an in-place write: the tensor's version counter moved):

    * whether every entry is one: then ``w * mask`` is ``w`` itself and the forward returns the
      dense weight unchanged (same values, same gradient in both gradient modes, no copy);
    * the mask as a float tensor of the weight's dtype, so that the product is not promoted
      from bool at every forward (and the plain-gradient backward, ``g * mask``, neither).

    Both are plain attributes, not buffers: ``state_dict()`` holds the boolean mask only.
    """

    def __init__(self, weight: Tensor, straight_through: bool = True) -> None:
        super().__init__()
        self.straight_through = straight_through
        self.register_buffer("mask", torch.ones_like(weight, dtype=torch.bool))
        self._reset_cache()

    def _reset_cache(self) -> None:
        self._seen: tuple[Tensor, int] | None = None
        """(the mask tensor, its version) that the cached values below were made from."""
        self._all_ones = True
        self._witness: Tensor | None = None
        """Where the mask had zeros when last looked at (checked first: a few elements)."""
        self._count: int | None = None
        self._zeroed: tuple[Tensor, int, Tensor, int] | None = None
        """(weight, its version, mask, its version) at the last :meth:`zero_pruned`."""
        self._factor: Tensor | None = None
        """The mask as a float tensor (made when a mask with a zero is used again)."""
        self._read = False
        """The forward pass read the current mask once already."""

    def __getstate__(self) -> dict[str, Any]:
        """A copy (``deepcopy``, pickle) starts without the cache: version counters are not
        copied, so a copy's could match a stale entry."""
        state = dict(super().__getstate__())
        for key in _CACHE_KEYS:
            state.pop(key, None)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        self._reset_cache()

    def _mask_version(self) -> tuple[Tensor, int]:
        mask = self.mask
        try:
            return mask, mask._version
        except RuntimeError:  # an inference tensor has no version counter: never cached
            return mask, -1

    def _refresh(self) -> None:
        """Recompute the all-ones flag when the mask changed since it was last read."""
        mask, version = self._mask_version()
        seen = self._seen
        if seen is not None and seen[0] is mask and seen[1] == version and version >= 0:
            return
        flat = mask.reshape(-1)
        witness = self._witness
        if witness is not None and witness.device == flat.device and \
                int(witness.max()) < flat.numel() and not bool(flat[witness].all()):
            self._all_ones = False  # a zero found last time is still there: no pass
        else:
            self._all_ones = bool(mask.all())
            if not self._all_ones:  # remember a few zeros: most stay zero at the next change
                spread = torch.arange(0, flat.numel(), max(1, flat.numel() // 256),
                                      device=flat.device)
                zeros = spread[~flat[spread]]
                first = flat.to(torch.uint8).argmin().reshape(1)
                self._witness = torch.cat([first, zeros[:31]])
        self._count = mask.numel() if self._all_ones else None
        self._factor = None
        self._read = False
        self._seen = (mask, version)

    def all_ones(self) -> bool:
        """Every weight kept (cached between mask changes)."""
        self._refresh()
        return self._all_ones

    def count(self) -> int:
        """Number of kept weights (ones in the mask; cached between mask changes)."""
        self._refresh()
        if self._count is None:
            self._count = int(self.mask.count_nonzero())
        return self._count

    def assign(self, mask: Tensor, count: int | None = None) -> None:
        """Copy ``mask`` into the buffer; ``count``, its number of ones when the caller knows
        it, spares :meth:`count` and :meth:`all_ones` a pass over it."""
        self.mask.copy_(mask)
        if count is None:
            return
        self._seen = self._mask_version()
        self._all_ones = count == mask.numel()
        self._count = count
        self._factor = None
        self._read = False

    def factor(self, like: Tensor) -> Tensor:
        """The mask as a tensor of ``like``'s dtype and device (cached between mask changes)."""
        self._refresh()
        factor = self._factor
        if factor is None or factor.dtype != like.dtype or factor.device != like.device:
            factor = self._factor = self.mask.to(device=like.device, dtype=like.dtype)
        return factor

    def zero_pruned(self, weight: Tensor) -> None:
        """Set ``weight`` (the dense tensor under this mask) to +0.0 wherever the mask is
        zero, in place; nothing when neither the mask nor the weight changed since the last
        call. ``w * m + 0.0``: two vectorised passes, where ``masked_fill`` is a slow one
        on a CPU (the ``+ 0.0`` turns the product's -0.0 into +0.0, as ``masked_fill``
        writes; it also turns a kept -0.0 into +0.0, the same value)."""
        if self.all_ones():
            return
        mask, version = self._mask_version()
        done = self._zeroed
        if done is not None and done[0] is weight and done[1] == weight._version \
                and done[2] is mask and done[3] == version and version >= 0:
            return
        with torch.no_grad():
            weight.mul_(self.factor(weight)).add_(0.0)
        self._zeroed = (weight, weight._version, mask, version)

    def forward(self, weight: Tensor) -> Tensor:
        if self.all_ones():
            return weight  # w * 1: the same values and the same gradient
        straight = self.straight_through and torch.is_grad_enabled()
        factor = self._operand(weight, reuse=not straight and torch.is_grad_enabled())
        if straight:
            return StraightThroughMask.apply(weight, factor)
        return weight * factor

    def _operand(self, weight: Tensor, reuse: bool) -> Tensor:
        """The float mask when it is cached or will serve more than once (``reuse``: the
        masked gradient multiplies by it again; or a second read of the same mask); the
        boolean mask itself on a first read (a mask that changes at every step: promoting
        it inside the product costs less than a float copy)."""
        self._refresh()
        factor = self._factor
        if factor is not None and factor.dtype == weight.dtype and factor.device == weight.device:
            return factor
        if reuse or self._read:
            return self.factor(weight)
        self._read = True
        return self.mask


def attach_masks(layers: dict[str, nn.Module],
                 straight_through: bool = True) -> dict[str, MaskedWeight]:
    """Register a :class:`MaskedWeight` on each layer's ``weight``; returns them by layer name.

    Nothing is attached when one of the layers is parametrized already.
    """
    taken = [name for name, module in layers.items()
             if parametrize.is_parametrized(module, "weight")]
    if taken:
        raise ValueError(f"layer(s) {taken} are already parametrized; attach one method only")
    out: dict[str, MaskedWeight] = {}
    for name, module in layers.items():
        param = MaskedWeight(module.weight, straight_through)
        parametrize.register_parametrization(module, "weight", param, unsafe=True)
        out[name] = param
    return out


def attach_alias(module: nn.Module, masked: MaskedWeight) -> None:
    """Give ``module``, whose weight is the same Parameter as another layer's, that layer's
    :class:`MaskedWeight`: one mask (and whatever a method registered on it) for both."""
    parametrize.register_parametrization(module, "weight", masked, unsafe=True)


def masked_weight(module: nn.Module) -> MaskedWeight:
    """The :class:`MaskedWeight` of a parametrized layer."""
    return module.parametrizations.weight[0]  # type: ignore[index,return-value]


def dense_weight(module: nn.Module) -> nn.Parameter:
    """The dense Parameter behind a parametrized layer's weight."""
    return module.parametrizations.weight.original  # type: ignore[return-value]


def remove_masks(layers: Iterable[nn.Module]) -> None:
    """Replace each parametrized weight by the plain tensor ``w * mask`` (pruned = exact zeros).

    Works on a deep copy without touching the original: the class that ``parametrize`` injects
    is shared by copies, so instead of :func:`parametrize.remove_parametrizations` (which edits
    that class) the module gets its original class back.
    """
    done: dict[int, nn.Parameter] = {}  # dense Parameter -> its plain one: tied stay tied
    for module in layers:
        if not parametrize.is_parametrized(module, "weight"):
            continue
        dense = dense_weight(module)
        if len(module.parametrizations) > 1:  # other parametrized tensors: the standard way
            with torch.no_grad():
                parametrize.remove_parametrizations(module, "weight", leave_parametrized=True)
            continue
        plain = done.get(id(dense))
        if plain is None:
            with torch.no_grad():
                value = module.weight.detach().clone()
            plain = done[id(dense)] = nn.Parameter(value, requires_grad=dense.requires_grad)
        del module._modules["parametrizations"]
        module.__class__ = module.__class__.__bases__[0]
        module.weight = plain


def keep_count(numel: int, density: float) -> int:
    """Exact rounding of a density to a number of kept weights, never below one."""
    return max(1, min(numel, int(round(density * numel))))


def topk_mask(scores: Tensor, keep: int) -> Tensor:
    """Boolean mask keeping exactly ``keep`` entries with the largest ``scores``.

    Uses a k-th value threshold (linear time) and falls back to ``topk`` only when ties make
    the threshold keep a different count.
    """
    flat = scores.reshape(-1)
    numel = flat.numel()
    keep = max(0, min(numel, keep))
    if keep == numel:
        return torch.ones_like(scores, dtype=torch.bool)
    if keep == 0:
        return torch.zeros_like(scores, dtype=torch.bool)
    threshold = torch.kthvalue(flat, numel - keep + 1).values
    mask = flat >= threshold
    if int(mask.sum()) != keep:
        mask = torch.zeros_like(flat, dtype=torch.bool)
        mask[torch.topk(flat, keep, sorted=False).indices] = True
    return mask.view_as(scores)


def global_topk_masks(scores: dict[str, Tensor], keep: int) -> dict[str, Tensor]:
    """One threshold across all layers: keep exactly ``keep`` weights with the largest scores.

    Every layer keeps at least its single best weight (so no layer is cut off entirely); this
    never changes the total count as long as ``keep`` >= the number of layers.
    """
    if not scores:
        return {}
    device = next(iter(scores.values())).device
    flats = []
    for score in scores.values():
        flat = score.detach().reshape(-1).float().to(device, copy=True)
        flat[flat.argmax()] = float("inf")
        flats.append(flat)
    joined = topk_mask(torch.cat(flats), max(keep, len(flats)))
    parts = joined.split([flat.numel() for flat in flats])
    out: dict[str, Tensor] = {}
    for (name, score), part in zip(scores.items(), parts, strict=True):
        out[name] = part.view_as(score).to(score.device)
    return out
