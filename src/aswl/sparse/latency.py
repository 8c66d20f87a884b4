"""Channel mode's latency budget: each Conv/Linear layer's measured time as a function of its
kept input and output channels (``budget: latency``).

:func:`profile_latency` times every layer on its own, with the activation and pooling modules
that follow it (a BatchNorm between is passed over: deployment folds it into the conv; a
layer with no such module gets a ReLU, the functional one most models call), at a
small grid of (input, output) channel counts, on the model's device, at the deployment batch
and the current thread count; each point is the median of ``repeats`` calls after a warm-up.
The table is cached in a JSON file keyed by the device, the threads, the batch, the torch
version and every layer's shape, so a second run spends no time on it; a table given
explicitly (``latency_table``) may come from another machine (a GPU table used while training
on a CPU), but it must be for this model's layers.

:class:`LatencyCost` is the :class:`~aswl.sparse.channel_cost.CostModel` of that table: a
layer's kept time is the table interpolated bilinearly at its kept (output, input) fraction
(linear extrapolation below the smallest measured count, never negative), and the cost of
one more channel of a group is the numeric derivative of the interpolated total.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from aswl.checks import ConfigError
from aswl.sparse.channel_cost import CostModel, round_count
from aswl.sparse.channel_graph import LAYER_TYPES
from aswl.sparse.latency_table import FORMAT, Grids, LatencyTable

log = logging.getLogger(__name__)

GRID = (0.125, 0.25, 0.5, 0.75, 1.0)
"""Channel fractions measured on each side of a layer (the counts are rounded, >= 1)."""
REPEATS = 9
MULTIPLE = 8
"""Channel counts are measured (and kept, with ``budget: latency``) at multiples of this."""


# ------------------------------------------------------------------------------ the setup
def device_name(device: torch.device) -> str:
    """'cuda: NVIDIA H100 80GB HBM3' or 'cpu: <the CPU's model name>'."""
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as handle:
            for line in handle:
                if line.startswith("model name"):
                    name = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return f"{device.type}: {name}"


def layer_shape(module: nn.Module, input_shape: tuple[int, ...],
                followers: list[nn.Module] | None = None) -> str:
    """A layer's identity for the cache: its type, widths, geometry and per-sample input."""
    if isinstance(module, nn.Linear):
        geometry = f"{module.in_features},{module.out_features}"
    else:
        geometry = (f"{module.in_channels},{module.out_channels},k{tuple(module.kernel_size)},"
                    f"s{tuple(module.stride)},p{module.padding},d{tuple(module.dilation)},"
                    f"g{module.groups}")
    bias = ",bias" if getattr(module, "bias", None) is not None else ""
    after = "".join(f" + {follower}" for follower in followers or [])
    return f"{type(module).__name__}({geometry}{bias}){after} on {tuple(input_shape[1:])}"


def default_cache() -> Path:
    """``$ASWL_CACHE`` or ``~/.cache/aswl``."""
    return Path(os.environ.get("ASWL_CACHE") or Path.home() / ".cache" / "aswl")


FOLLOWERS = (nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.GELU, nn.SiLU, nn.Hardswish, nn.ELU,
             nn.modules.pooling._MaxPoolNd, nn.modules.pooling._AvgPoolNd,
             nn.modules.pooling._AdaptiveAvgPoolNd, nn.modules.pooling._AdaptiveMaxPoolNd)
"""Parameter-free modules timed with the layer they follow (its activation and pooling; a
BatchNorm between is folded into the layer at deployment, so it is passed over)."""


def _trace(model: nn.Module, names: list[str],
           example_inputs: Any) -> tuple[dict[str, tuple], dict[str, list[nn.Module]]]:
    """Each layer's input shape and the :data:`FOLLOWERS` modules that run right after it
    (in the order the forward pass calls the modules)."""
    shapes: dict[str, tuple] = {}
    calls: list[tuple[str, nn.Module]] = []
    wanted = set(names)

    def keep(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, output: Any) -> None:
            if name in wanted:
                shapes.setdefault(name, tuple(args[0].shape))
            calls.append((name, module))
        return hook

    hooks = [m.register_forward_hook(keep(n)) for n, m in model.named_modules()
             if n in wanted or isinstance(m, (*FOLLOWERS, nn.modules.batchnorm._BatchNorm))]
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(*example_inputs) if isinstance(example_inputs, tuple) else model(example_inputs)
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    followers: dict[str, list[nn.Module]] = {}
    for i, (name, _module) in enumerate(calls):
        if name not in wanted or name in followers:
            continue
        followers[name] = []
        for _other, module in calls[i + 1:]:
            if isinstance(module, FOLLOWERS):
                followers[name].append(module)
            elif not isinstance(module, nn.modules.batchnorm._BatchNorm):
                break
    return shapes, followers


# ------------------------------------------------------------------------------ timing
def _counts(width: int, multiple: int = 1) -> list[int]:
    """Channel counts measured on a side of this width: the grid's fractions, rounded to the
    multiple the counts are kept at (:func:`round_count`)."""
    return sorted({round_count(max(1, round(f * width)), width, multiple) for f in GRID})


def _shrunk(module: nn.Module, cin: int, cout: int) -> nn.Module:
    """The layer with ``cin`` inputs and ``cout`` outputs (a depthwise conv stays one)."""
    if isinstance(module, nn.Linear):
        return nn.Linear(cin, cout, bias=module.bias is not None)
    new = copy.deepcopy(module)
    depthwise = module.groups == module.in_channels == module.out_channels > 1
    new.in_channels, new.out_channels = cin, cout
    new.groups = cin if depthwise else module.groups
    shape = (cout, cin // new.groups, *module.kernel_size)
    if isinstance(module, nn.modules.conv._ConvTransposeNd):
        shape = (cin, cout // new.groups, *module.kernel_size)
    new.weight = nn.Parameter(torch.randn(shape, device=module.weight.device) * 0.1)
    if module.bias is not None:
        new.bias = nn.Parameter(torch.zeros(cout, device=module.weight.device))
    return new


def time_points(fns: dict[Any, Callable[[], Any]], repeats: int,
                device: torch.device) -> dict[Any, float]:
    """Median ms of each function, called in turn (interleaved, so that a drift of the
    machine's load hits every point alike) ``repeats`` times after a warm-up: CPU time with
    one thread, wall time otherwise and on a GPU (synchronised after each call)."""
    from aswl.export.sparse_modules import interleaved_ms

    cuda = device.type == "cuda"
    clock = time.process_time if torch.get_num_threads() == 1 and not cuda \
        else time.perf_counter
    if cuda:
        fns = {k: (lambda f=f: (f(), torch.cuda.synchronize(device))) for k, f in fns.items()}
    return interleaved_ms(fns, repeats, clock)


def _measure_layer(module: nn.Module, shape: tuple, batch: int, repeats: int,
                   multiple: int, followers: list[nn.Module]) -> dict[str, Any]:
    device = module.weight.device
    linear = isinstance(module, nn.Linear)
    width_in = module.in_features if linear else module.in_channels
    width_out = module.out_features if linear else module.out_channels
    depthwise = not linear and module.groups == width_in == width_out > 1
    fixed = not linear and module.groups > 1 and not depthwise  # grouped: never sliced
    ins = [width_in] if depthwise or fixed else _counts(width_in, multiple)
    outs = [width_out] if fixed else _counts(width_out, multiple)
    fns = {}
    # without an activation module after it, the layer most likely has a functional one
    after = nn.Sequential(*followers) if followers else torch.relu_
    for cout in outs:
        for cin in ins:
            cin_now = cout if depthwise else cin
            layer = _shrunk(module, cin_now, cout).eval()
            x = torch.randn(batch, *shape[1:-1], cin_now, device=device) if linear else \
                torch.randn(batch, cin_now, *shape[2:], device=device)
            fns[cout, cin] = lambda layer=layer, x=x: after(layer(x))
    with torch.no_grad():
        ms_at = time_points(fns, repeats, device)
    # timing noise must not make fewer channels slower: nondecreasing along both sides
    ms = torch.tensor([[ms_at[o, i] for i in ins] for o in outs], dtype=torch.float64)
    ms = torch.cummax(torch.cummax(ms, 0).values, 1).values
    return {"in": [c / width_in for c in ins], "out": [c / width_out for c in outs],
            "ms": ms.tolist()}


# ------------------------------------------------------------------------------ the budget
class LatencyCost(CostModel):
    """:class:`CostModel` whose layer costs are measured ms (module docstring). The kept
    counts are those channel mode keeps (multiples of the table's ``multiple``,
    :func:`~aswl.sparse.channel_cost.round_count`)."""

    def __init__(self, base: CostModel, table: LatencyTable, names: list[str],
                 sizes: Tensor) -> None:
        self.table = table
        self.names = names
        self.sizes = sizes.double()
        ones = torch.ones(1, dtype=torch.float64)
        costs = torch.cat([table.interpolate(n, ones, ones) for n in names])
        self.grids = Grids([table.layers[n] for n in names])
        super().__init__(costs, base.out_group, base.in_share,
                         int(table.header.get("multiple", 1)))

    def _quantised(self, density: Tensor) -> Tensor:
        """The kept fraction of the counts channel mode keeps at these fractions."""
        sizes, m = self.sizes, self.multiple
        count = (density.double() * sizes).round().clamp(min=1.0)
        if m > 1:
            rounded = ((count / m).round().clamp(min=1.0) * m).clamp(max=sizes)
            count = torch.where((sizes >= 2 * m) & (count < sizes), rounded, count)
        return torch.minimum(count, sizes) / sizes

    def _times(self, density: Tensor) -> Tensor:
        out, inp = self._sides(density.double())
        return self.grids.interpolate(out, inp) / self.costs.clamp_min(1e-12)

    def fractions(self, density: Tensor) -> Tensor:
        return self._times(self._quantised(density))

    def per_channel(self, density: Tensor, sizes: Tensor) -> Tensor:
        """ms of one more channel in each group: central difference of the interpolated
        total (counts not rounded) over one channel on each side (one-sided at the ends)."""
        sizes = sizes.double()
        step = torch.diag(1.0 / sizes)
        density = density.double()
        up = (density + step).clamp(max=1.0)
        down = (density - step).clamp(min=0.0)
        span = (up - down).diagonal().clamp_min(1e-12)
        kept = (self.costs * (self._times(up) - self._times(down))).sum(-1)
        return kept / span / sizes


def profile_latency(model: nn.Module, example_inputs: Any, batch: int | None = None,
                    path: str | Path | None = None, names: list[str] | None = None,
                    repeats: int = REPEATS, multiple: int = MULTIPLE) -> LatencyTable:
    """Measure (or load from the cache) the latency table of ``model``'s Conv/Linear layers.

    ``batch``: the deployment batch (default: the example's); the thread count is the
    current one; the device is the model's. ``path``: the file to write (default: a file in
    the cache folder named after the setup); an existing file is loaded instead of timing,
    and refused when it was made for another setup or other layers."""
    names = names or [n for n, m in model.named_modules() if isinstance(m, LAYER_TYPES)]
    shapes_in, followers = _trace(model, names, example_inputs)
    names = [n for n in names if n in shapes_in]
    shapes = {n: layer_shape(model.get_submodule(n), shapes_in[n], followers[n]) for n in names}
    first = example_inputs[0] if isinstance(example_inputs, tuple) else example_inputs
    device = next(model.parameters()).device
    want = {"device": device_name(device), "threads": torch.get_num_threads(),
            "batch": int(batch or first.shape[0]), "torch": torch.__version__,
            "multiple": int(multiple)}
    if path is None:
        digest = hashlib.sha1(json.dumps([FORMAT, want, shapes],
                                         sort_keys=True).encode()).hexdigest()
        path = default_cache() / f"latency-{digest[:16]}.json"
    path = Path(path)
    if path.is_file():
        table = LatencyTable.read(path)
        table.check(path, want, shapes)
        table.path, table.cached = path, True
        log.info("latency table %s: loaded (made in %.1f s)", path,
                 table.header.get("seconds", 0.0))
        return table
    start = time.perf_counter()
    layers = {}
    for name in names:
        entry = _measure_layer(model.get_submodule(name), shapes_in[name], want["batch"],
                               repeats, multiple, followers[name])
        layers[name] = {"shape": shapes[name], **entry}
    seconds = time.perf_counter() - start
    table = LatencyTable({**want, "seconds": round(seconds, 2)}, layers, path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_suffix(".tmp")
    temporary.write_text(table.to_json())
    temporary.replace(path)
    log.info("latency table: %d layers timed in %.1f s (%s, %d thread(s), batch %d), "
             "written to %s", len(layers), seconds, want["device"], want["threads"],
             want["batch"], path)
    return table


def load_latency_table(path: str | Path, model: nn.Module, example_inputs: Any,
                       names: list[str], batch: int | None = None,
                       device: str | None = None) -> LatencyTable:
    """A table given by the user (maybe made on another machine): it must be for these
    layers, and for ``batch`` / a device whose name starts with ``device`` when given."""
    path = Path(path)
    table = LatencyTable.read(path)
    shapes_in, followers = _trace(model, names, example_inputs)
    shapes = {n: layer_shape(model.get_submodule(n), shapes_in[n], followers[n]) for n in names
              if n in shapes_in}
    want: dict[str, Any] = {} if batch is None else {"batch": int(batch)}
    if device and not str(table.header.get("device", "")).startswith(device):
        want["device"] = device
    table.check(path, want, shapes)
    log.info("latency table %s: made on %s, %s thread(s), batch %s", path,
             table.header.get("device"), table.header.get("threads"),
             table.header.get("batch"))
    return table


def latency_cost(base: CostModel, sizes: Tensor, model: nn.Module, names: list[str],
                 example_inputs: Any, batch: int | None = None, table: str | None = None,
                 device: str | None = None) -> LatencyCost:
    """The latency cost of channel mode's layers: ``table`` (a file made with
    :func:`profile_latency`, maybe elsewhere) or the cached / freshly measured one."""
    if table and Path(table).is_file():
        loaded = load_latency_table(table, model, example_inputs, names, batch, device)
    else:
        loaded = profile_latency(model, example_inputs, batch, table, names)
    if math.isclose(float(sum(loaded.layers[n]["ms"][-1][-1] for n in names)), 0.0):
        raise ConfigError("the latency table's layers all take 0 ms: profile again with "
                          "more repeats or a larger latency_batch")
    return LatencyCost(base, loaded, names, sizes)


def saved_latency_cost(cost: LatencyCost, state: Any, sizes: Tensor) -> LatencyCost:
    """The cost of the table a checkpoint holds (:meth:`LatencyTable.to_state`), in place of
    ``cost`` (the table measured or cached now): a resumed run keeps the times it started
    with, whatever the cache or this machine's load say now."""
    table = LatencyTable.from_state(state, cost.table, cost.names)
    if table.layers != {n: cost.table.layers[n] for n in cost.names}:
        log.info("latency table: the checkpoint's (made on %s), not the one measured now",
                 table.header.get("device"))
    return LatencyCost(cost, table, cost.names, sizes)


__all__ = ["LatencyCost", "LatencyTable", "latency_cost", "load_latency_table",
           "profile_latency", "saved_latency_cost"]
