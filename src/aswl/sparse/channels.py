"""Channel granularity: channel masks during training and the slimmed export.

Which channels may go, and why others are kept whole, is :mod:`aswl.sparse.channel_graph`;
what the budget counts is :mod:`aswl.sparse.channel_cost`.

During training a group's mask multiplies the output of the last module of each of its
producer chains (the BatchNorm after a conv, else the conv or Linear itself) and of every
other BatchNorm over its channels, so a masked channel is exactly zero where any layer reads
it. The dense weights of a masked channel are kept; the masks also mask the gradient (a
method may ask for straight-through at the first mask on each path, channel methods do not:
:attr:`aswl.methods.channel.ChannelMethod.straight_through`). A mask after an earlier one (a
depthwise conv's BatchNorm, the BatchNorm of a dense block reading a concatenation) is never
straight-through: the channel is zero there already, and a BatchNorm in training mode scales
the gradient of a constant channel by 1/sqrt(eps), which would reach every layer before it.
The first mask on each path shows an observer (channel ASWL's estimator) the gradient before
masking it.

:func:`slim` removes the masked channels for real; :func:`check_slim` runs the example input
through the masked and the slimmed model and refuses a slimmed model that computes anything
else (so no file is written for a model channel mode got wrong).
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from aswl.checks import ConfigError
from aswl.finite import check_finite
from aswl.sparse.channel_cost import (
    CostModel,
    cost_model,
    fit_budget,
    layer_costs,
    round_count,
    threshold_budget,
)
from aswl.sparse.channel_graph import (
    LAYER_TYPES,
    NORM_TYPES,
    ChannelGroup,
    MaskPoint,
    find_groups,
    output_layers,
    trace_graph,
)
from aswl.sparse.masked import StraightThroughMask

Observer = Callable[[Tensor, Tensor], None]
log = logging.getLogger(__name__)


# ------------------------------------------------------------------------------ masks
class ChannelMaskHook:
    """One group's mask at one module (a :class:`MaskPoint`): which of the module's output
    channels it multiplies, and an optional observer of their gradient."""

    def __init__(self, mask: Tensor, point: MaskPoint, straight_through: bool = False) -> None:
        self.mask = mask
        self.channel_dim = point.channel_dim
        self.index = point.index.to(mask.device)
        self.root = point.root.to(mask.device)
        self.identity = bool(torch.equal(point.index, point.root)) and \
            bool(torch.equal(point.root, torch.arange(len(mask))))
        self.first = point.first
        self.straight_through = straight_through and point.first
        self.dense = True
        """All channels kept: nothing to multiply."""
        self.observe: Observer | None = None
        """First masks on a path only: called in the backward pass with the gradient and the
        unmasked output of the group's channels (in group order)."""

    def scale(self, out: Tensor) -> None:
        """Write this group's mask into ``out`` (one value per channel of the module)."""
        if self.identity and len(out) == len(self.mask):
            out.copy_(self.mask)
        else:
            out[self.index] = self.mask[self.root].to(out.dtype)


class _MaskedChannels(torch.autograd.Function):
    """Forward ``x * forward_scale``; backward ``grad * backward_scale`` (ones where the mask
    is straight-through), after showing the observers their channels."""

    @staticmethod
    def forward(ctx, x: Tensor, forward_scale: Tensor, backward_scale: Tensor | None,  # type: ignore[override]
                observers: list[tuple[ChannelMaskHook, Observer]]) -> Tensor:
        ctx.observers = observers
        ctx.backward_scale = backward_scale
        if observers:
            ctx.save_for_backward(x)
        return x * forward_scale

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor | None, None, None, None]:  # type: ignore[override]
        if ctx.observers:
            (x,) = ctx.saved_tensors
            for hook, observe in ctx.observers:
                dim = hook.channel_dim % grad.dim()
                observe(grad.index_select(dim, hook.index), x.index_select(dim, hook.index))
        if ctx.backward_scale is not None:
            grad = grad * ctx.backward_scale
        return grad, None, None, None


class ModuleMasks:
    """The forward hook of one module: multiplies its output by every group mask placed
    there (a BatchNorm over a concatenation carries several groups)."""

    def __init__(self) -> None:
        self.parts: list[ChannelMaskHook] = []
        self._cache: tuple[Any, Tensor, Tensor | None] | None = None

    def _scales(self, output: Tensor, dim: int) -> tuple[Tensor, Tensor | None]:
        """The forward and backward multipliers, shaped for ``output``; rebuilt only when a
        mask changed (their in-place version counters) or the output's layout did."""
        key = (tuple(p.mask._version for p in self.parts), output.dtype, output.device,
               output.dim(), dim, output.shape[dim])
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1], self._cache[2]
        shape = [1] * output.dim()
        shape[dim] = -1
        forward = torch.ones(output.shape[dim], dtype=output.dtype, device=output.device)
        for part in self.parts:
            part.scale(forward)
        backward = None
        plain = [p for p in self.parts if not p.straight_through]
        if plain:
            backward = torch.ones_like(forward)
            for part in plain:
                part.scale(backward)
            backward = backward.view(shape)
        self._cache = (key, forward.view(shape), backward)
        return forward.view(shape), backward

    def __call__(self, module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
        observers = [(p, p.observe) for p in self.parts
                     if p.observe is not None and p.first and torch.is_grad_enabled()]
        if not observers and all(p.dense for p in self.parts):
            return output
        forward, backward = self._scales(output, self.parts[0].channel_dim % output.dim())
        if not torch.is_grad_enabled():
            return output * forward
        if backward is None and not observers:  # straight-through only: grad passes as is
            return StraightThroughMask.apply(output, forward)
        if not observers and all(not p.straight_through for p in self.parts):
            return output * forward  # plain masks: autograd masks the gradient alike
        return _MaskedChannels.apply(output, forward, backward, observers)


def add_channel_hook(model: nn.Module, mask: Tensor, point: MaskPoint,
                     straight_through: bool = False) -> ChannelMaskHook:
    """Place ``mask`` at ``point`` (one :class:`ModuleMasks` per module); with
    ``straight_through`` the first mask on a path hands the gradient on unchanged."""
    module = model.get_submodule(point.module)
    masks = next((h for h in module._forward_hooks.values() if isinstance(h, ModuleMasks)),
                 None)
    if masks is None:
        masks = ModuleMasks()
        module.register_forward_hook(masks)
    hook = ChannelMaskHook(mask, point, straight_through)
    masks.parts.append(hook)
    return hook


def has_channel_hooks(model: nn.Module) -> bool:
    return any(isinstance(h, ModuleMasks) for m in model.modules()
               for h in m._forward_hooks.values())


def remove_channel_hooks(model: nn.Module) -> None:
    """Drop every channel mask hook (works on deep copies too)."""
    for module in model.modules():
        for key, hook in list(module._forward_hooks.items()):
            if isinstance(hook, ModuleMasks):
                del module._forward_hooks[key]


def probe_inputs(example_inputs: Any) -> list[Any]:
    """The example inputs, and where they are floats a random batch of their shape too: a
    batch of zeros can hide a wrong model (through bias-free layers everything stays 0)."""
    if isinstance(example_inputs, Tensor) and example_inputs.is_floating_point():
        generator = torch.Generator().manual_seed(0)
        noise = torch.randn(example_inputs.shape, generator=generator)
        return [example_inputs, noise.to(example_inputs.device, example_inputs.dtype)]
    return [example_inputs]


def zero_probe(model: nn.Module, example_inputs: Any, groups: list[ChannelGroup]) -> dict[str, str]:
    """Groups whose masked channels do not reach their readers as zeros, with the reader.

    Masks every other channel of every group, runs ``example_inputs`` in eval mode and looks
    at each reader's input: an operation in between that maps 0 to something else (a
    sigmoid, an added constant) makes the slimmed model differ, so that group is refused."""
    masks = [torch.ones(g.size, dtype=torch.bool) for g in groups]
    for mask in masks:
        if len(mask) > 1:
            mask[1::2] = False
    hooks, pre = [], []
    bad: dict[str, str] = {}
    for group, mask in zip(groups, masks):
        for point in group.mask_points:
            hooks.append(add_channel_hook(model, mask, point))
            hooks[-1].dense = False
        for name, (index, root) in group.reads.items():
            module = model.get_submodule(name)
            dim = -1 if isinstance(module, nn.Linear) else 1

            def check(mod: nn.Module, args: Any, group: ChannelGroup = group, mask: Tensor = mask,
                      index: Tensor = index, root: Tensor = root, dim: int = dim,
                      name: str = name) -> None:
                x = args[0] if args and isinstance(args[0], Tensor) else None
                if x is None or group.name in bad:
                    return
                seen = x.movedim(dim, -1).reshape(-1, x.shape[dim])[:, index[~mask[root]]]
                if bool((seen != 0).any()):
                    bad[group.name] = (f"a masked channel reaches {name} as a nonzero value (an "
                                       "operation between them does not map 0 to 0, e.g. a "
                                       "sigmoid, or moves channels, e.g. a channel shuffle)")
            pre.append(module.register_forward_pre_hook(check))
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for inputs in probe_inputs(example_inputs):
                model(inputs)
    finally:
        model.train(was_training)
        remove_channel_hooks(model)
        for handle in pre:
            handle.remove()
    return bad


# ------------------------------------------------------------------------------ export
def slim(model: nn.Module, example_inputs: Any, removed: dict[str, Any],
         in_place: bool = False) -> nn.Module:
    """A copy of ``model`` (``in_place``: the model itself) with the channels ``removed``
    (root-layer name -> root channel indices) taken out for real: every coupled layer gets
    smaller."""
    plain = model if in_place else copy.deepcopy(model)
    remove_channel_hooks(plain)
    graph = trace_graph(plain, example_inputs)
    for name, index in removed.items():
        idxs = sorted(int(i) for i in index)
        if not idxs:
            continue
        try:
            root = plain.get_submodule(name)
        except AttributeError as err:
            raise ConfigError(f"cannot slim: the model has no layer {name!r} (the channel "
                              "record belongs to another architecture)") from err
        pruner = graph.get_pruner_of_module(root)
        group = graph.get_pruning_group(root, pruner.prune_out_channels, idxs)
        group.prune()
    return plain.eval()


def _outputs(model: nn.Module, example_inputs: Any) -> list[Tensor]:
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(example_inputs)
    finally:
        model.train(was_training)
    items = out.values() if isinstance(out, dict) else out if isinstance(out, (tuple, list)) \
        else [out]
    return [o for o in items if isinstance(o, Tensor)]


def _pairs(masked: nn.Module, slimmed: nn.Module,
           example_inputs: Any) -> list[tuple[Tensor, Tensor]]:
    return [(a, b) for inputs in probe_inputs(example_inputs)
            for a, b in zip(_outputs(masked, inputs), _outputs(slimmed, inputs))]


def _finite(pairs: list[tuple[Tensor, Tensor]]) -> bool:
    return all(bool(torch.isfinite(a).all()) for a, _ in pairs if a.is_floating_point())


def check_slim(masked: nn.Module, slimmed: nn.Module, example_inputs: Any,
               tolerance: float = 1e-4) -> None:
    """Refuse a slimmed model whose weights are not finite or whose eval-mode outputs on
    ``example_inputs`` (and on a random batch of their shape, :func:`probe_inputs`) differ
    from the masked model's (beyond float rounding).

    Where the masked model's own float32 outputs overflow (e.g. BatchNorm running statistics
    far from a short run's batches), both are compared in float64 on copies; where even
    those are not finite, the comparison is skipped with a warning."""
    check_finite(slimmed.state_dict(), "the slimmed model")
    pairs = _pairs(masked, slimmed, example_inputs)
    if not _finite(pairs) and isinstance(example_inputs, Tensor) \
            and example_inputs.is_floating_point():
        wide = copy.deepcopy(masked).double()
        pairs = _pairs(wide, copy.deepcopy(slimmed).double(), example_inputs.double())
        if not _finite(pairs):
            log.warning("the masked model's own outputs are not finite in eval mode (even in "
                        "float64): the slimmed model could not be compared with it; train "
                        "longer or check the BatchNorm running statistics")
            return
    for a, b in pairs:
        if a.shape != b.shape:
            raise RuntimeError(f"channel mode built a wrong model: its output has shape "
                               f"{tuple(b.shape)} instead of {tuple(a.shape)}; nothing was "
                               "exported (please report the model; structure = 'weight' works)")
        diff = float((a.double() - b.double()).abs().max()) if a.numel() else 0.0
        scale = float(a.double().abs().max()) if a.numel() else 0.0
        if not math.isfinite(diff) or diff > tolerance * max(1.0, scale):
            raise RuntimeError(f"channel mode built a wrong model: the slimmed model's outputs "
                               f"differ from the masked model's by {diff:.3g} (largest output "
                               f"{scale:.3g}); nothing was exported (please report the model; "
                               "structure = 'weight' works)")


SLIM_KEY = "aswl_channels"
"""Metadata key of a slimmed model file: the input shape it was traced on and the channels
removed from each group, so a loader can rebuild the thinner architecture."""


def slim_record(example_inputs: Tensor, removed: dict[str, Tensor]) -> dict[str, str]:
    """The metadata a slimmed model's files carry (see :data:`SLIM_KEY`)."""
    return {SLIM_KEY: json.dumps({
        "input_shape": list(example_inputs.shape[1:]),
        "removed": {name: [int(i) for i in index] for name, index in removed.items()}})}


MAX_RECORD_CHANNELS = 1 << 20
"""Most channel indices one group of a channel record may list."""


def parse_slim_record(text: str) -> tuple[list[int], dict[str, list[int]]]:
    """The input shape and removed channels of a :data:`SLIM_KEY` record, every field checked
    (types, lengths, an input shape within the bounds of ``--input-shape``) before anything
    is built."""
    from aswl.models.registry import MAX_INPUT_SIDE, MAX_INPUT_VALUES

    def damaged(why: str) -> ConfigError:
        return ConfigError(f"the file's {SLIM_KEY} record is damaged ({why}); export it again")

    try:
        record = json.loads(text)
    except ValueError as err:
        raise damaged("not JSON") from err
    if not isinstance(record, dict) or set(record) != {"input_shape", "removed"}:
        raise damaged("expected the keys input_shape and removed")
    shape, removed = record["input_shape"], record["removed"]
    if not isinstance(shape, list) or not 1 <= len(shape) <= 4 or not all(
            type(v) is int and 1 <= v <= MAX_INPUT_SIDE for v in shape) \
            or math.prod(shape) > MAX_INPUT_VALUES:
        raise damaged(f"input_shape must be 1 to 4 positive integers, each at most "
                      f"{MAX_INPUT_SIDE:,} and {MAX_INPUT_VALUES:,} values in all")
    if not isinstance(removed, dict) or not all(
            isinstance(k, str) and isinstance(v, list) and len(v) <= MAX_RECORD_CHANNELS
            and all(type(i) is int and 0 <= i < MAX_RECORD_CHANNELS for i in v)
            for k, v in removed.items()):
        raise damaged("removed must map layer names to lists of channel indices")
    return shape, removed


def apply_slim_record(model: nn.Module, metadata: dict[str, str]) -> nn.Module:
    """Slim a freshly built full-width ``model`` in place as the file's record says (no-op
    for a file without one)."""
    if SLIM_KEY not in metadata:
        return model
    shape, removed = parse_slim_record(metadata[SLIM_KEY])
    for name, index in removed.items():
        try:
            layer = model.get_submodule(name)
        except AttributeError as err:
            raise ConfigError(f"cannot slim: the model has no layer {name!r} (the channel "
                              "record belongs to another architecture)") from err
        width = getattr(layer, "out_channels", getattr(layer, "out_features", 0))
        if len(set(index)) != len(index) or any(i >= width for i in index) or \
                len(index) >= max(width, 1):
            raise ConfigError(f"the file's {SLIM_KEY} record is damaged (the channels removed "
                              f"from {name!r} do not fit its {width}); export it again")
    return slim(model, torch.zeros(1, *shape), removed, in_place=True)


__all__ = ["LAYER_TYPES", "NORM_TYPES", "SLIM_KEY", "ChannelGroup", "ChannelMaskHook",
           "CostModel", "MaskPoint", "ModuleMasks", "add_channel_hook", "apply_slim_record",
           "check_slim", "cost_model", "find_groups", "fit_budget", "has_channel_hooks",
           "layer_costs", "output_layers", "parse_slim_record", "remove_channel_hooks",
           "round_count", "slim", "slim_record", "threshold_budget", "zero_probe"]
