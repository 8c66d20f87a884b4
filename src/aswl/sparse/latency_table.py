"""The latency table of channel mode's ``budget: latency`` (:mod:`aswl.sparse.latency`
measures it): per layer, the measured ms at a grid of kept (output, input) channel fractions,
its file format, its checks, and its bilinear interpolation (one layer, or every layer at
once for the budget solver)."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from aswl.checks import ConfigError

FORMAT = "aswl-latency-table/2"
"""/2: timed after :func:`~aswl.export.sparse_modules.warm_allocator` (a /1 table is refused)."""

# ------------------------------------------------------------------------------ the table
@dataclass
class LatencyTable:
    """Per layer: measured ms at (output fraction, input fraction) grid points."""

    header: dict[str, Any]
    """device, threads, batch, torch, seconds (how long profiling took)."""
    layers: dict[str, dict[str, Any]]
    """name -> {shape, in, out, ms}."""
    path: Path | None = None
    """The file it was read from or written to."""
    cached: bool = False
    """True: read from a file, nothing timed."""

    def to_json(self) -> str:
        return json.dumps({"format": FORMAT, **self.header, "layers": self.layers})

    @classmethod
    def read(cls, path: Path) -> LatencyTable:
        try:
            data = json.loads(Path(path).read_text())
            made = data.pop("format")
            if made != FORMAT:
                raise ValueError(f"format {made!r}, this aswl reads {FORMAT!r}"
                                 if str(made).startswith("aswl-latency-table/")
                                 else "not an aswl latency table")
            layers = data.pop("layers")
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ConfigError(f"latency table {path} cannot be read ({err}): write it again "
                              "with `aswl profile` or aswl.profile_latency") from None
        return cls(data, layers)

    def check(self, path: Path | str, want: dict[str, Any], shapes: dict[str, str]) -> None:
        """Refuse a table made for another setup (``want``: the fields that must match) or
        for other layers, naming what differs."""
        diffs = [f"{k} {self.header.get(k)!r} (this run: {v!r})" for k, v in want.items()
                 if self.header.get(k) != v]
        other = [n for n, s in shapes.items() if self.layers.get(n, {}).get("shape") != s]
        if other:
            first = other[0]
            diffs.append(f"{len(other)} layer(s) of another shape or missing, e.g. {first}: "
                         f"{self.layers.get(first, {}).get('shape')!r} (this model: "
                         f"{shapes[first]!r})")
        if diffs:
            raise ConfigError(f"latency table {path} was made for {'; '.join(diffs)}: make "
                              "one for this model and setup with `aswl profile` (or "
                              "aswl.profile_latency), or drop latency_table to use the cache")

    def to_state(self) -> dict[str, Any]:
        """What a checkpoint keeps, so a resumed run budgets with the same table."""
        return {"header": dict(self.header), "layers": copy.deepcopy(self.layers)}

    @classmethod
    def from_state(cls, state: Any, like: LatencyTable, names: list[str]) -> LatencyTable:
        """The table a checkpoint holds (:meth:`to_state`); it must be for the layers of
        ``like``, the table this model was given now, and hold finite times >= 0 on a grid
        of fractions in (0, 1]."""
        where = "the checkpoint's latency table"
        try:
            table = cls(dict(state["header"]), {n: dict(state["layers"][n]) for n in names})
        except (KeyError, TypeError, ValueError) as err:
            raise ConfigError(f"{where} is incomplete ({type(err).__name__}: a layer or "
                              "field is missing): resume from an intact checkpoint") from None
        table.check(where, {}, {n: like.layers[n]["shape"] for n in names})
        for name, entry in table.layers.items():
            try:
                ins, outs = [float(f) for f in entry["in"]], [float(f) for f in entry["out"]]
                ms = torch.tensor(entry["ms"], dtype=torch.float64)
                ok = (ms.shape == (len(outs), len(ins)) and bool(torch.isfinite(ms).all())
                      and bool((ms >= 0).all()) and all(0 < f <= 1 for f in ins + outs))
            except (KeyError, TypeError, ValueError):
                ok = False
            if not ok:
                raise ConfigError(f"{where}: layer {name!r} has no valid grid of times: "
                                  "resume from an intact checkpoint")
        return table

    def interpolate(self, name: str, out: Tensor, inp: Tensor) -> Tensor:
        """The layer's ms at these kept (output, input) fractions (broadcast)."""
        return Grids([self.layers[name]]).interpolate(out[..., None], inp[..., None])[..., 0]


def _lerp(a: Tensor, b: Tensor, w: Tensor) -> Tensor:
    return a + (b - a) * w


class Grids:
    """Every layer's grid in padded tensors, interpolated in one pass (the budget solver
    evaluates the kept cost many times per mask update: one table lookup per layer was 95%
    of that). Same values as :meth:`LatencyTable.interpolate` layer by layer."""

    def __init__(self, entries: list[dict[str, Any]]) -> None:
        rows, cols = max(len(e["out"]) for e in entries), max(len(e["in"]) for e in entries)
        inf = float("inf")
        self.out = torch.tensor([e["out"] + [inf] * (rows - len(e["out"])) for e in entries],
                                dtype=torch.float64)
        self.inp = torch.tensor([e["in"] + [inf] * (cols - len(e["in"])) for e in entries],
                                dtype=torch.float64)
        self.ms = torch.zeros(len(entries), rows, cols, dtype=torch.float64)
        for i, entry in enumerate(entries):
            ms = torch.tensor(entry["ms"], dtype=torch.float64)
            self.ms[i, :ms.shape[0], :ms.shape[1]] = ms
        self.rows = torch.tensor([len(e["out"]) for e in entries])
        self.cols = torch.tensor([len(e["in"]) for e in entries])
        self.layer = torch.arange(len(entries))

    @staticmethod
    def _segment(grid: Tensor, length: Tensor, x: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """Each x's segment on its layer's sorted grid (lower index, upper index, position
        in it; ``x``: [..., layers]); below the first point the first segment extends (linear
        extrapolation), above the last x is the last point."""
        last = grid.gather(1, (length - 1)[:, None])[:, 0]
        x = torch.minimum(x.double(), last)
        upper = (grid < x[..., None]).sum(-1)
        upper = torch.minimum(upper.clamp_min(1), (length - 1).clamp_min(1))
        upper = torch.where(length > 1, upper, torch.zeros_like(upper))
        lower = (upper - 1).clamp_min(0)
        index = torch.arange(grid.shape[0]).expand_as(upper)
        low, high = grid[index, lower], grid[index, upper]
        span = high - low
        weight = torch.where(span > 0, (x - low) / torch.where(span > 0, span, 1.0), 0.0)
        return lower, upper, weight

    def interpolate(self, out: Tensor, inp: Tensor) -> Tensor:
        """Every layer's ms at these kept (output, input) fractions ([..., layers])."""
        r0, r1, rw = self._segment(self.out, self.rows, out)
        c0, c1, cw = self._segment(self.inp, self.cols, inp)
        layer = self.layer.expand_as(r0)
        near = _lerp(self.ms[layer, r0, c0], self.ms[layer, r0, c1], cw)
        far = _lerp(self.ms[layer, r1, c0], self.ms[layer, r1, c1], cw)
        return _lerp(near, far, rw).clamp_min(0.0)


__all__ = ["FORMAT", "Grids", "LatencyTable"]
