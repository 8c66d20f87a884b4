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
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize


class _StraightThroughMask(torch.autograd.Function):
    """Forward ``w * m``; backward passes the gradient to ``w`` untouched."""

    @staticmethod
    def forward(ctx, weight: Tensor, mask: Tensor) -> Tensor:  # type: ignore[override]
        return weight * mask

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None]:  # type: ignore[override]
        return grad, None


class MaskedWeight(nn.Module):
    """Parametrization ``w -> w * mask`` (the mask a boolean buffer, all ones at first)."""

    def __init__(self, weight: Tensor, straight_through: bool = True) -> None:
        super().__init__()
        self.straight_through = straight_through
        self.register_buffer("mask", torch.ones_like(weight, dtype=torch.bool))

    def forward(self, weight: Tensor) -> Tensor:
        # float * bool promotes inside the kernel: no float copy of the mask per forward
        if self.straight_through and torch.is_grad_enabled():
            return _StraightThroughMask.apply(weight, self.mask)
        return weight * self.mask


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
