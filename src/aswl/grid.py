"""What ``aswl compare`` runs: methods (and option variants) x target sparsities x seeds.

:func:`load_grid` reads it from a YAML file and the command's flags; :class:`Grid` checks it
before anything trains. Used by :mod:`aswl.compare`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aswl.checks import ConfigError
from aswl.config import read_yaml_mapping, yaml_load
from aswl.methods import get_method, list_methods

DENSE = "dense"
GRID_KEYS = ("methods", "sparsities", "seeds", "layer_plot_sparsity", "variants")


@dataclass
class Grid:
    """What to compare: method names, target sparsities and seeds."""

    methods: list[str]
    sparsities: list[float]
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    layer_plot_sparsity: float | None = None
    variants: list[str] = field(default_factory=list)
    """``NAME:KEY=VALUE[+KEY=VALUE...]``: a method with options of its own, rows of its own."""

    def entries(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(label, method name, options) of every row kind: the methods, then the variants."""
        return [(m, m, {}) for m in self.methods] + [
            (token, *parse_variant(token)) for token in self.variants]

    def validate(self) -> None:
        if not self.methods and not self.variants:
            raise ConfigError("compare: no methods given; use e.g. --methods dense,aswl "
                              f"(available: {', '.join(list_methods())})")
        labels = [label for label, _, _ in self.entries()]  # parses every variant
        for _, name, _ in self.entries():
            get_method(name)  # ConfigError listing the available ones
        if len(set(labels)) != len(labels):
            raise ConfigError(f"compare: a method is listed twice in {labels}")
        if any(name != DENSE for _, name, _ in self.entries()) and not self.sparsities:
            raise ConfigError("compare: no target sparsities given; use e.g. "
                              "--sparsities 0.9,0.95")
        for value in self.sparsities:
            if not 0.0 <= value < 1.0:
                raise ConfigError(f"compare: sparsity {value!r} is invalid: expected a "
                                  "fraction in [0, 1)")
        if not self.seeds:
            raise ConfigError("compare: no seeds given; use e.g. --seeds 3")
        if len(set(self.seeds)) != len(self.seeds):
            raise ConfigError(f"compare: a seed is listed twice in {self.seeds}")
        if (self.layer_plot_sparsity is not None
                and self.layer_plot_sparsity not in self.sparsities):
            raise ConfigError(f"compare: layer plot sparsity {self.layer_plot_sparsity} is not "
                              f"one of the grid's sparsities {self.sparsities}")

    def plot_sparsity(self) -> float | None:
        """The sparsity of the per-layer plot: as given, else the middle of the grid."""
        if self.layer_plot_sparsity is not None:
            return self.layer_plot_sparsity
        ordered = sorted(self.sparsities)
        return ordered[len(ordered) // 2] if ordered else None


def parse_list(text: str | Sequence[Any] | None, kind: type, what: str) -> list[Any] | None:
    """``"a,b"`` or a YAML list -> list of ``kind``; None stays None."""
    if text is None:
        return None
    items = text.split(",") if isinstance(text, str) else list(text)
    out = []
    for item in items:
        if isinstance(item, str):
            item = item.strip()
            if not item:
                continue
        try:
            out.append(kind(item))
        except (TypeError, ValueError) as err:
            raise ConfigError(f"compare: {what} {item!r} is not a {kind.__name__}") from err
    return out


def parse_variant(token: str) -> tuple[str, dict[str, Any]]:
    """``aswl:prior=uniform+attention_lr=0`` -> ("aswl", {"prior": "uniform", "attention_lr": 0})
    (values read as YAML)."""
    name, sep, rest = token.partition(":")
    options: dict[str, Any] = {}
    for item in filter(None, rest.split("+")):
        key, eq, value = item.partition("=")
        if not eq or not key.strip():
            raise ConfigError(f"compare: variant {token!r}: expected NAME:KEY=VALUE[+KEY=VALUE"
                              "...], e.g. aswl:prior=uniform")
        options[key.strip()] = yaml_load(value) if value.strip() else ""
    if not name.strip() or (sep and not options):
        raise ConfigError(f"compare: variant {token!r}: expected NAME:KEY=VALUE[+KEY=VALUE...], "
                          "e.g. aswl:prior=uniform")
    return name.strip(), options


def parse_seeds(value: str | int | Sequence[Any] | None) -> list[int] | None:
    """``3`` (a count: seeds 0, 1, 2) or a list ``0,4,7`` / ``[0, 4, 7]``."""
    if value is None:
        return None
    if isinstance(value, bool):
        raise ConfigError(f"compare: seeds = {value!r} is invalid")
    if isinstance(value, int):
        count = value
    elif isinstance(value, str) and "," not in value:
        try:
            count = int(value)
        except ValueError as err:
            raise ConfigError(f"compare: seeds = {value!r} is not a count or a list") from err
    else:
        return parse_list(value, int, "seed")
    if count < 1:
        raise ConfigError(f"compare: seeds = {count} is invalid: expected a count >= 1")
    return list(range(count))


def load_grid(path: str | Path | None = None, *, methods: str | None = None,
              sparsities: str | None = None, seeds: str | int | None = None,
              layer_plot_sparsity: float | None = None,
              variants: str | Sequence[str] | None = None) -> Grid:
    """Grid from an optional YAML file (keys ``methods``, ``sparsities``, ``seeds``,
    ``layer_plot_sparsity``, ``variants``), each key overridden by the matching argument when
    given. ``variants``: a list of tokens (a string is one token: option values may hold
    commas)."""
    values: dict[str, Any] = {}
    if path is not None:
        loaded = read_yaml_mapping(path, "grid file")
        unknown = sorted(set(loaded) - set(GRID_KEYS))
        if unknown:
            raise ConfigError(f"grid file {str(path)!r}: unknown key(s) {unknown}; "
                              f"valid keys: {list(GRID_KEYS)}")
        values = loaded
    method_list = parse_list(methods if methods is not None else values.get("methods"),
                             str, "method") or []
    sparsity_list = parse_list(sparsities if sparsities is not None
                               else values.get("sparsities"), float, "sparsity") or []
    seed_list = parse_seeds(seeds if seeds is not None else values.get("seeds", 3))
    plot = layer_plot_sparsity if layer_plot_sparsity is not None \
        else values.get("layer_plot_sparsity")
    chosen = variants if variants is not None else values.get("variants")
    variant_list = parse_list([chosen] if isinstance(chosen, str) else chosen, str,
                              "variant") or []
    grid = Grid(methods=method_list, sparsities=sorted(set(sparsity_list)),
                seeds=seed_list or [], layer_plot_sparsity=None if plot is None else float(plot),
                variants=variant_list)
    grid.validate()
    return grid
