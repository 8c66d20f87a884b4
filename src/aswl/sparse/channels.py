"""Channel granularity: coupled channel groups, channel masks, their cost and a slimmed export.

A *channel group* is a set of channels that must be kept or removed together: the output
channels of a conv (or the neurons of a Linear layer), the BatchNorm that follows it, every
layer whose output is added to it through a residual sum, a depthwise conv that follows its
input, and the input channels of every layer that reads them. The groups are found by
Torch-Pruning's dependency graph (Fang et al., "DepGraph", CVPR 2023; ``pip install
aswl[structured]``), traced once on example inputs.

During training a group's mask multiplies the output of the last module of each of its
producer chains (the BatchNorm after a conv, else the conv or Linear itself), so a masked
channel is exactly zero downstream. The dense weights of a masked channel are kept, and the
mask is straight-through (the backward pass hands the gradient on unchanged), so a masked
channel can come back while the masks still move when its score rises again. How much
gradient a masked channel gets depends on what follows the mask: a ReLU right after it (most
convnets) passes none, since it sees a zero input.
:func:`slim` removes the masked channels for real: the result is a smaller dense model that
computes the same outputs (activations must map 0 to 0: ReLU, GELU, SiLU, tanh; not sigmoid).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from aswl.checks import ConfigError

NORM_TYPES = (nn.modules.batchnorm._BatchNorm,)
LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


@dataclass
class ChannelGroup:
    """One set of coupled channels, named after its root layer."""

    name: str
    size: int
    producers: list[str] = field(default_factory=list)
    """Conv/Linear layers whose output channels these are (depthwise convs included)."""
    norms: list[str] = field(default_factory=list)
    """Normalisation layers over these channels."""
    depthwise: list[str] = field(default_factory=list)
    """The producers that are depthwise convs (they read the channels they produce)."""
    consumers: list[str] = field(default_factory=list)
    """Conv/Linear layers that read these channels as inputs."""
    mask_points: list[str] = field(default_factory=list)
    """Modules whose output the mask multiplies."""
    slices: list[tuple[str, str, Tensor]] = field(default_factory=list, repr=False)
    """(module name, 'out' or 'in', root channel of each index along that dimension)."""


def _torch_pruning() -> Any:
    try:
        import torch_pruning
    except ImportError as err:
        raise ConfigError("structure = 'channel' needs Torch-Pruning's dependency graph: "
                          "pip install 'aswl[structured]' (or torch-pruning)") from err
    return torch_pruning


def _graph(model: nn.Module, example_inputs: Any) -> Any:
    tp = _torch_pruning()
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(
                model, example_inputs=example_inputs, verbose=False)
    except Exception as err:  # the tracer's own errors say little: name what failed
        raise ConfigError(f"cannot trace the model's channel dependencies "
                          f"({type(err).__name__}: {err}); pass example_inputs the model "
                          "accepts, or exclude the layers involved (method.exclude)") from err
    finally:
        model.train(was_training)


def output_layers(model: nn.Module, example_inputs: Any) -> list[str]:
    """Conv/Linear layers whose output is (part of) the model's output: never pruned."""
    seen: list[tuple[str, Any]] = []  # the tensors themselves: ids of freed ones recur

    def record(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            seen.append((name, output))
        return hook

    hooks = [module.register_forward_hook(record(name))
             for name, module in model.named_modules() if isinstance(module, LAYER_TYPES)]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(example_inputs)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    outs = out if isinstance(out, (tuple, list)) else (out,)
    return [name for name, tensor in seen if any(tensor is o for o in outs)]


def find_groups(model: nn.Module, example_inputs: Any, layers: dict[str, nn.Module],
                exclude: list[str] | None = None) -> list[ChannelGroup]:
    """The coupled channel groups whose every producer is one of ``layers`` (by name).

    A group that would prune a layer outside ``layers`` (an excluded layer, the classifier
    whose outputs are the model's) is left out whole.
    """
    names = {module: name for name, module in model.named_modules()}
    order = {name: i for i, name in enumerate(names.values())}
    try:
        fixed = set(output_layers(model, example_inputs)) | set(exclude or ())
    except (RuntimeError, TypeError, ValueError) as err:
        raise ConfigError(f"cannot trace the model's channel dependencies: the model fails on "
                          f"example_inputs ({type(err).__name__}: {err}); pass a batch the "
                          "model accepts, e.g. torch.zeros(1, *input_shape)") from err
    ignored = [model.get_submodule(n) for n in fixed]
    graph = _graph(model, example_inputs)
    groups: list[ChannelGroup] = []
    for group in graph.get_all_groups(ignored_layers=ignored,
                                      root_module_types=LAYER_TYPES):
        root = group[0].dep.target.module
        found = ChannelGroup(name=names[root], size=len(group[0].idxs))
        usable = True
        for item in group:
            module = item.dep.target.module
            name = names.get(module)
            if name is None or not isinstance(module, (*LAYER_TYPES, *NORM_TYPES)):
                continue  # a reshape, a flatten, an add: nothing to slice
            out = graph.is_out_channel_pruning_fn(item.dep.handler)
            depthwise = isinstance(module, nn.modules.conv._ConvNd) and \
                module.groups > 1 and module.groups == module.in_channels
            root_index = torch.as_tensor(item.root_idxs, dtype=torch.long)
            if isinstance(module, NORM_TYPES):
                found.norms.append(name)
                found.slices.append((name, "out", root_index))
            elif out or depthwise:
                if name not in layers or name in fixed:
                    usable = False
                    break
                if name not in found.producers:
                    found.producers.append(name)
                    if depthwise:
                        found.depthwise.append(name)
                    found.slices.append((name, "out", root_index))
            else:
                found.consumers.append(name)
                found.slices.append((name, "in", root_index))
        if not usable or not found.producers:
            continue
        found.producers.sort(key=order.__getitem__)  # named after its first producer
        found.name = found.producers[0]
        found.mask_points = _mask_points(graph, model, found, names)
        groups.append(found)
    if not groups:
        raise ConfigError("no prunable channel group found: every group touches an excluded "
                          "layer or the model's output layer; check method.include/exclude")
    return groups


def _mask_points(graph: Any, model: nn.Module, group: ChannelGroup,
                 names: dict[nn.Module, str]) -> list[str]:
    """The BatchNorm right after each producer when there is one, else the producer."""
    points = []
    for name in group.producers:  # one mask point per producer, in the same order
        node = graph.module2node[model.get_submodule(name)]
        after = [names.get(out.module) for out in node.outputs]
        norm = next((n for n in after if n in group.norms), None)
        points.append(norm or name)
    return points


# ------------------------------------------------------------------------------ masks
class _StraightThroughChannels(torch.autograd.Function):
    """Forward ``x * mask`` over the channel dimension; backward hands the gradient on
    unchanged, after showing it (and the unmasked ``x``) to an optional observer."""

    @staticmethod
    def forward(ctx, x: Tensor, mask: Tensor, observe: Callable | None) -> Tensor:  # type: ignore[override]
        ctx.observe = observe
        if observe is not None:
            ctx.save_for_backward(x)
        return x * mask

    @staticmethod
    def backward(ctx, grad: Tensor) -> tuple[Tensor, None, None]:  # type: ignore[override]
        if ctx.observe is not None:
            (x,) = ctx.saved_tensors
            ctx.observe(grad, x)
        return grad, None, None


class ChannelMaskHook:
    """Forward hook that multiplies a module's output by its group's channel mask."""

    def __init__(self, mask: Tensor, channel_dim: int) -> None:
        self.mask = mask
        self.channel_dim = channel_dim
        self.dense = True
        """All channels kept: the hook returns the output untouched (no cost)."""
        self.observe: Callable[[Tensor, Tensor], None] | None = None

    def shaped(self, output: Tensor) -> Tensor:
        shape = [1] * output.dim()
        shape[self.channel_dim] = -1
        return self.mask.view(shape).to(output.dtype)

    def __call__(self, module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
        if self.dense and self.observe is None:
            return output
        if torch.is_grad_enabled():
            return _StraightThroughChannels.apply(output, self.shaped(output), self.observe)
        return output * self.shaped(output)


def channel_dim(module: nn.Module) -> int:
    """Where a module's output keeps its channels: last for Linear, 1 otherwise."""
    return -1 if isinstance(module, nn.Linear) else 1


def remove_channel_hooks(model: nn.Module) -> None:
    """Drop every :class:`ChannelMaskHook` (works on deep copies too)."""
    for module in model.modules():
        for key, hook in list(module._forward_hooks.items()):
            if isinstance(hook, ChannelMaskHook):
                del module._forward_hooks[key]


# ------------------------------------------------------------------------------ cost
@dataclass
class CostModel:
    """Kept cost (parameters or FLOPs) of the Conv/Linear layers as a function of the
    groups' kept fractions: a layer's cost scales with the kept fraction of its output group
    times that of its input group (once for a depthwise conv, whose two are one)."""

    costs: Tensor
    """Dense cost of each layer."""
    out_group: Tensor
    in_group: Tensor
    """Index of each layer's output / input group; -1: none (that side is never pruned)."""

    @property
    def total(self) -> float:
        return float(self.costs.sum())

    def _sides(self, density: Tensor) -> tuple[Tensor, Tensor]:
        padded = torch.cat([density, density.new_ones(1)])  # index -1: the fixed side
        out = padded[self.out_group]
        inp = torch.where(self.in_group == self.out_group, torch.ones_like(out),
                          padded[self.in_group])
        return out, inp

    def kept(self, density: Tensor) -> Tensor:
        """Kept cost at these per-group kept fractions; broadcasts over leading dims."""
        out, inp = self._sides(density)
        return (self.costs * out * inp).sum(-1)

    def per_channel(self, density: Tensor, sizes: Tensor) -> Tensor:
        """Cost of one more channel in each group at these kept fractions."""
        out, inp = self._sides(density)
        slots = len(sizes) + 1  # the last slot collects the never-pruned sides
        grads = torch.zeros(slots, dtype=self.costs.dtype)
        grads.index_add_(0, self.out_group % slots, self.costs * inp)
        other = self.in_group != self.out_group
        grads.index_add_(0, (self.in_group % slots)[other], (self.costs * out)[other])
        return grads[:-1] / sizes.to(grads.dtype)


def cost_model(groups: list[ChannelGroup], costs: dict[str, float]) -> CostModel:
    """``costs``: each Conv/Linear layer's dense cost by name."""
    out_of = {p: i for i, g in enumerate(groups) for p in g.producers}
    in_of = {c: i for i, g in enumerate(groups) for c in g.consumers}
    in_of.update({d: i for i, g in enumerate(groups) for d in g.depthwise})
    names = list(costs)
    return CostModel(
        torch.tensor([float(costs[n]) for n in names], dtype=torch.float64),
        torch.tensor([out_of.get(n, -1) for n in names], dtype=torch.long),
        torch.tensor([in_of.get(n, -1) for n in names], dtype=torch.long))


def fit_budget(raw: Tensor, lower: Tensor, model: CostModel, kept: float) -> Tensor:
    """Kept fractions clip(c * raw, lower, 1) whose kept cost is ``kept``, c found by
    bisection (the cost is nondecreasing in c)."""
    raw = raw.double().clamp_min(1e-12)
    lower = lower.double()
    if model.kept(torch.ones_like(raw)) <= kept:
        return torch.ones_like(raw)
    lo, hi = 0.0, float((1.0 / raw).max())
    for _ in range(60):
        mid = (lo + hi) / 2
        if float(model.kept(_clip(mid * raw, lower))) < kept:
            lo = mid
        else:
            hi = mid
    return _clip(hi * raw, lower)


def _clip(density: Tensor, lower: Tensor) -> Tensor:
    return torch.minimum(torch.maximum(density, lower), torch.ones_like(density))


def threshold_budget(scores: list[Tensor], lower: list[int], model: CostModel,
                     kept: float) -> list[int]:
    """Channels each group keeps under ONE score threshold across groups, the threshold
    chosen (bisection over the sorted scores) so the kept cost is at most ``kept``; every
    group keeps at least ``lower`` of its channels."""
    sizes = torch.tensor([s.numel() for s in scores], dtype=torch.float64)
    every = torch.cat([s.detach().double().cpu().reshape(-1) for s in scores]).sort().values
    ranked = [s.detach().double().cpu().reshape(-1).sort(descending=True).values for s in scores]

    def counts(threshold: float) -> list[int]:
        return [max(low, int((r >= threshold).sum())) for r, low in zip(ranked, lower)]

    lo, hi = 0, len(every) - 1  # a threshold at every[i] keeps the scores >= every[i]
    while lo < hi:
        mid = (lo + hi) // 2
        density = torch.tensor(counts(float(every[mid])), dtype=torch.float64) / sizes
        if float(model.kept(density)) > kept:
            lo = mid + 1
        else:
            hi = mid
    return counts(float(every[lo]))


# ------------------------------------------------------------------------------ export
def slim(model: nn.Module, example_inputs: Any, removed: dict[str, Any],
         in_place: bool = False) -> nn.Module:
    """A copy of ``model`` (``in_place``: the model itself) with the channels ``removed``
    (root-layer name -> root channel indices) taken out for real: every coupled layer gets
    smaller."""
    plain = model if in_place else copy.deepcopy(model)
    remove_channel_hooks(plain)
    graph = _graph(plain, example_inputs)
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


def layer_costs(model: nn.Module, names: list[str], example_inputs: Tensor,
                budget: str) -> dict[str, float]:
    """Each layer's dense parameter count or FLOPs per sample (2 per multiply-accumulate)."""
    if budget == "params":
        return {n: float(model.get_submodule(n).weight.numel()) for n in names}
    from aswl.sparse.flops import layer_flops

    flops = layer_flops(model, names, tuple(example_inputs.shape[1:]))
    return {n: float(flops.get(n, 0)) for n in names}


SLIM_KEY = "aswl_channels"
"""Metadata key of a slimmed model file: the input shape it was traced on and the channels
removed from each group, so a loader can rebuild the thinner architecture."""


def slim_record(example_inputs: Tensor, removed: dict[str, Tensor]) -> dict[str, str]:
    """The metadata a slimmed model's files carry (see :data:`SLIM_KEY`)."""
    import json

    return {SLIM_KEY: json.dumps({
        "input_shape": list(example_inputs.shape[1:]),
        "removed": {name: [int(i) for i in index] for name, index in removed.items()}})}


def apply_slim_record(model: nn.Module, metadata: dict[str, str]) -> nn.Module:
    """Slim a freshly built full-width ``model`` in place as the file's record says (no-op
    for a file without one)."""
    import json

    if SLIM_KEY not in metadata:
        return model
    try:
        record = json.loads(metadata[SLIM_KEY])
        shape = [int(v) for v in record["input_shape"]]
        removed = {str(k): [int(i) for i in v] for k, v in record["removed"].items()}
    except (ValueError, KeyError, TypeError) as err:
        raise ConfigError(f"the file's {SLIM_KEY} record is damaged ({err}); export it "
                          "again") from err
    return slim(model, torch.zeros(1, *shape), removed, in_place=True)


__all__ = ["SLIM_KEY", "ChannelGroup", "ChannelMaskHook", "CostModel", "apply_slim_record",
           "channel_dim", "cost_model", "find_groups", "fit_budget", "layer_costs",
           "output_layers", "remove_channel_hooks", "slim", "slim_record", "threshold_budget"]
