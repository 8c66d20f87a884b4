"""Which channels channel mode may remove: the coupled groups, and the ones kept whole.

A *channel group* is a set of channels that must be kept or removed together: the output
channels of a conv (or the neurons of a Linear layer), the BatchNorm that follows it, every
layer whose output is added to it through a residual sum, a depthwise conv that follows its
input, and the input channels of every layer that reads them (through a concatenation too).
The groups are found by Torch-Pruning's dependency graph (Fang et al., "DepGraph", CVPR
2023), traced once on example inputs.

A group is only offered for pruning when removing its channels for real gives the same
model as masking them. Anything this module cannot prove that for keeps the group whole, and
the log says which groups and why (:func:`find_groups`):

* channels that reach the model's output (found on the autograd graph: the layers whose
  output reaches the model's output without passing another Conv/Linear layer);
* a layer the user excluded (``method.exclude``/``include``, the same globs as weight mode);
* a grouped convolution (``groups`` > 1 and not depthwise) that reads the channels among
  others (a concatenation), or grouped convolutions whose blocks do not line up; otherwise
  a grouped conv's output channels go in equal numbers from each of its blocks and its input
  channels at the same positions of every block (:attr:`ChannelGroup.unit`);
* a normalisation across channels (LayerNorm, GroupNorm, ...), an attention block, a bare
  ``nn.Parameter`` used in ``forward`` (layer scale, position embedding, class token), or any
  other module whose channels Torch-Pruning would cut but whose maths over the channels is
  not a per-channel one this project checks;
* an operation between a masked layer and its reader that does not map a zero channel to
  zero (a sigmoid, an added constant), found by :func:`zero_probe` at attach.
"""

from __future__ import annotations

import logging
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from aswl.checks import ConfigError

log = logging.getLogger(__name__)

NORM_TYPES = (nn.modules.batchnorm._BatchNorm,)
"""Per-channel normalisations that are sliced with the channels they normalise."""
LAYER_TYPES = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d,
               nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
"""Layers whose output channels (or neurons) channel mode removes."""


@dataclass
class MaskPoint:
    """A module whose output one group's mask multiplies."""

    module: str
    channel_dim: int
    index: Tensor
    """Positions of the group's channels along the module's channel dimension."""
    root: Tensor
    """For each of those positions, the group channel it carries."""
    first: bool
    """The first mask on its path (a non-depthwise producer's): the one whose gradient and
    unmasked output an estimator observes, and the only one that may be straight-through.
    False: a mask after an earlier one, where the input is zero already (e.g. a BatchNorm
    reading a masked channel: in training mode it scales the gradient of a constant channel
    by 1/sqrt(eps), so such a mask never hands a gradient on)."""


@dataclass
class ChannelGroup:
    """One set of coupled channels, named after its first producer."""

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
    mask_points: list[MaskPoint] = field(default_factory=list, repr=False)
    slices: list[tuple[str, str, Tensor, Tensor]] = field(default_factory=list, repr=False)
    """(module name, 'out' or 'in', positions along that dimension, the group channel at
    each position): a BatchNorm or a reader of a concatenation holds the group at an
    offset."""
    blocks: int = 1
    """A grouped conv produces these channels: each of its ``blocks`` equal blocks keeps
    the same number of them."""
    period: int = 0
    """A grouped conv reads these channels (0: none): channels ``i``, ``i + period``, ...
    (one per block of its input) are kept or removed together, since a slimmed grouped conv
    drops the same input positions from every block."""
    reads: dict[str, tuple[Tensor, Tensor]] = field(default_factory=dict, repr=False)
    """Consumer name -> (positions along its input channels, root channel of each)."""

    @property
    def unit(self) -> int:
        """Kept counts are multiples of this (1 unless a grouped conv is involved)."""
        return self.size // self.period if self.period else self.blocks

    def mask(self, score: Tensor, keep: int) -> Tensor:
        """The ``keep`` best channels by ``score`` under the grouped-conv constraints
        (``keep`` a multiple of :attr:`unit`)."""
        if self.period:
            units = score.reshape(self.size // self.period, self.period).sum(0)
            return _top(units, keep // self.unit).repeat(self.size // self.period)
        rows = score.reshape(self.blocks, -1)
        return torch.stack([_top(row, keep // self.blocks) for row in rows]).reshape(-1)

    @property
    def inputs(self) -> dict[str, int]:
        """Consumer name -> how many of its input channels (or features) are this group's."""
        return {name: len(index) for name, (index, _root) in self.reads.items()}


def _top(score: Tensor, keep: int) -> Tensor:
    mask = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
    mask[score.reshape(-1).topk(keep).indices] = True
    return mask


def _grouped(module: nn.Module, name: str, group: ChannelGroup, out: bool, index: Tensor,
             root: Tensor) -> str | None:
    """Record a grouped conv's constraint on ``group``; why it cannot be kept, or None."""
    blocks = module.groups
    if module.transposed:
        return f"grouped transposed convolution {name}"
    if out:
        if group.blocks not in (1, blocks):
            return "grouped convolutions with different group counts share these channels"
        group.blocks = blocks
    else:
        whole = len(index) == module.in_channels == group.size
        if not whole or not torch.equal(index, root):
            return f"grouped convolution {name} reads these channels among others"
        period = module.in_channels // blocks
        if group.period not in (0, period):
            return "grouped convolutions with different group counts read these channels"
        group.period = period
    if group.period and group.blocks > 1 and group.size // group.period != group.blocks:
        return f"grouped convolution {name}: its blocks do not line up with the others'"
    return None


def _torch_pruning() -> Any:
    try:
        import torch_pruning
    except ImportError as err:
        raise ConfigError("structure = 'channel' needs Torch-Pruning's dependency graph: "
                          "pip install 'aswl[structured]' (or torch-pruning)") from err
    return torch_pruning


def trace_graph(model: nn.Module, example_inputs: Any) -> Any:
    """Torch-Pruning's dependency graph of ``model`` on ``example_inputs`` (eval mode)."""
    tp = _torch_pruning()
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            return tp.DependencyGraph().build_dependency(
                model, example_inputs=example_inputs, verbose=False)
    except Exception as err:  # the tracer's own errors say little: name where it failed
        raise ConfigError(f"cannot trace the model's channel dependencies: {_where(err)} "
                          f"({type(err).__name__}: {err}); a reshape or view that splits or "
                          "shuffles the channel dimension (e.g. a channel shuffle) cannot be "
                          "followed: use structure = 'weight' for this model") from err
    finally:
        model.train(was_training)


def _where(err: BaseException) -> str:
    """The tracer's step that failed, e.g. 'in its reshape handling (_update_reshape_...)'."""
    frames = [f for f in traceback.extract_tb(err.__traceback__) if "torch_pruning" in f.filename]
    if not frames:
        return "the model fails on example_inputs"
    name = frames[-1].name
    kind = next((k for k in ("reshape", "concat", "split", "slice", "unbind", "expand")
                 if k in name.lower()), None)
    what = f"its {kind} handling" if kind else "its graph walk"
    return f"Torch-Pruning fails in {what} ({name})"


def _tensors(value: Any) -> Iterator[Tensor]:
    if isinstance(value, Tensor):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _tensors(item)
    elif isinstance(value, (tuple, list)):
        for item in value:
            yield from _tensors(item)


def output_layers(model: nn.Module, example_inputs: Any) -> list[str]:
    """Conv/Linear layers whose output reaches the model's output without passing another
    Conv/Linear layer (through pooling, flatten, activations, sums...): never pruned."""
    nodes: dict[Any, str] = {}
    outputs: list[tuple[str, Tensor]] = []  # keeps the tensors (and their nodes) alive

    def record(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, inputs: Any, output: Any) -> None:
            if isinstance(output, Tensor):
                outputs.append((name, output))
                if output.grad_fn is not None:
                    nodes[output.grad_fn] = name
        return hook

    hooks = [module.register_forward_hook(record(name))
             for name, module in model.named_modules() if isinstance(module, LAYER_TYPES)]
    if isinstance(example_inputs, Tensor) and example_inputs.is_floating_point():
        example_inputs = example_inputs.detach().clone().requires_grad_(True)  # a graph even
        # where every parameter is frozen
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            out = list(_tensors(model(example_inputs)))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    found = {name for name, tensor in outputs if any(tensor is o for o in out)}
    stack = [o.grad_fn for o in out if o.grad_fn is not None]
    seen: set[Any] = set()
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if node in nodes:
            found.add(nodes[node])
            continue
        stack.extend(n for n, _ in node.next_functions if n is not None)
    return sorted(found)


def _refusal(module: Any, name: str | None, layers: dict[str, nn.Module],
             fixed: dict[str, str], out: bool) -> str | None:
    """Why a group holding ``module`` must stay whole, or None."""
    kind = type(module).__name__
    if isinstance(module, nn.Parameter):
        return "a bare nn.Parameter over these channels (layer scale, embedding, token)"
    if name is None:
        if kind == "_OutputOp":
            return "these channels are the model's output"
        return None  # Torch-Pruning's own nodes: add, cat, split, reshape, ...
    if isinstance(module, LAYER_TYPES):
        if out and name in fixed:
            return f"{name} is {fixed[name]}"
        if out and name not in layers:
            return f"{name} is not a prunable layer"
        return None
    if isinstance(module, NORM_TYPES):
        return None
    return f"{kind} {name} (its channels are kept whole)"


def find_groups(model: nn.Module, example_inputs: Any, layers: dict[str, nn.Module],
                refused: dict[str, str] | None = None) -> list[ChannelGroup]:
    """The coupled channel groups that channel mode may prune, whose producers are all in
    ``layers`` (by name; the Conv/Linear layers left after include/exclude).

    ``refused`` (filled when given): group name -> why it is kept whole (module docstring).
    """
    names = {module: name for name, module in model.named_modules()}
    order = {name: i for i, name in enumerate(names.values())}
    try:
        fixed = {n: "(part of) the model's output" for n in output_layers(model, example_inputs)}
    except (RuntimeError, TypeError, ValueError) as err:
        raise ConfigError(f"cannot trace the model's channel dependencies: the model fails on "
                          f"example_inputs ({type(err).__name__}: {err}); pass a batch the "
                          "model accepts, e.g. torch.zeros(1, *input_shape)") from err
    for name, module in model.named_modules():
        if isinstance(module, LAYER_TYPES) and name not in layers and name not in fixed:
            fixed[name] = "excluded (method.include/exclude)"
    graph = trace_graph(model, example_inputs)
    refused = {} if refused is None else refused
    groups: list[ChannelGroup] = []
    for group in graph.get_all_groups(root_module_types=LAYER_TYPES):
        found = ChannelGroup(name=names.get(group[0].dep.target.module, "?"),
                             size=len(group[0].idxs))
        reason = None
        points: list[tuple[str, Tensor, Tensor]] = []
        for item in group:
            module = item.dep.target.module
            name = names.get(module) if isinstance(module, nn.Module) else None
            out = graph.is_out_channel_pruning_fn(item.dep.handler)
            reason = _refusal(module, name, layers, fixed, out)
            if reason is not None:
                break
            if name is None:
                continue
            root = torch.as_tensor(item.root_idxs, dtype=torch.long)
            index = torch.as_tensor(item.idxs, dtype=torch.long)
            blocks = getattr(module, "groups", 1)
            depthwise = blocks > 1 and module.in_channels == module.out_channels == blocks
            if blocks > 1 and not depthwise:
                reason = _grouped(module, name, found, out, index, root)
                if reason is not None:
                    break
            if isinstance(module, NORM_TYPES):
                if name not in found.norms:
                    found.norms.append(name)
                    found.slices.append((name, "out", index, root))
                    points.append((name, index, root))
            elif out or depthwise:
                if name not in found.producers:
                    found.producers.append(name)
                    if depthwise:
                        found.depthwise.append(name)
                    found.slices.append((name, "out", index, root))
                    points.append((name, index, root))
            elif name not in found.consumers:
                found.consumers.append(name)
                found.slices.append((name, "in", index, root))
                found.reads[name] = (index, root)
        if reason is None and not found.producers:
            continue
        if reason is not None:
            refused[found.name] = reason
            continue
        found.producers.sort(key=order.__getitem__)  # named after its first producer
        found.name = found.producers[0]
        found.mask_points = _mask_points(graph, model, found, names, points)
        groups.append(found)
    if refused:
        log.info("channel mode keeps %d channel group(s) whole: %s", len(refused),
                 "; ".join(f"{g}: {why}" for g, why in sorted(refused.items())))
    if not groups:
        raise ConfigError("no prunable channel group found: every group touches the model's "
                          "output, an excluded layer or a module channel mode does not slice ("
                          + "; ".join(f"{g}: {why}" for g, why in sorted(refused.items()))[:500]
                          + "); check method.include/exclude or use structure = 'weight'")
    return groups


def _mask_points(graph: Any, model: nn.Module, group: ChannelGroup,
                 names: dict[nn.Module, str],
                 points: list[tuple[str, Tensor, Tensor]]) -> list[MaskPoint]:
    """Where the group's mask multiplies: the BatchNorm right after each producer when there
    is one, else the producer; and every other normalisation over the channels (a BatchNorm
    of a masked channel outputs its bias, which the slimmed model no longer has).

    The first mask on a path is a non-depthwise producer's (its input is not masked by this
    group); everywhere else the input there is masked already."""
    where = {name: (index, root) for name, index, root in points}
    chosen: dict[str, bool] = {}
    for name in group.producers:
        node = graph.module2node[model.get_submodule(name)]
        after = [names.get(out.module) for out in node.outputs]
        norm = next((n for n in after if n in group.norms), None)
        chosen[norm or name] = name not in group.depthwise
    for norm in group.norms:
        chosen.setdefault(norm, False)
    result = []
    for name, straight in chosen.items():
        module = model.get_submodule(name)
        index, root = where[name]
        order = root.argsort()
        result.append(MaskPoint(name, -1 if isinstance(module, nn.Linear) else 1,
                                index[order], root[order], straight))
    return result


__all__ = ["LAYER_TYPES", "NORM_TYPES", "ChannelGroup", "MaskPoint", "find_groups",
           "output_layers", "trace_graph"]
