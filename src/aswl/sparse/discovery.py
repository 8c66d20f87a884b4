"""Which weights of a model are prunable: layer discovery by type and name patterns, and the
layers that share one weight Parameter (tied weights)."""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence

from torch import nn
from torch.nn.utils import parametrize

from aswl.sparse.masked import dense_weight

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)


def find_prunable(model: nn.Module, include: Sequence[str] | None = None,
                  exclude: Sequence[str] = ()) -> dict[str, nn.Module]:
    """Every Conv/Linear layer by fully qualified name, filtered by glob patterns.

    ``include`` (default: all) and ``exclude`` are :func:`fnmatch` patterns on the layer name.
    """
    found: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if not isinstance(module, PRUNABLE_TYPES):
            continue
        if include and not any(fnmatch.fnmatchcase(name, pat) for pat in include):
            continue
        if any(fnmatch.fnmatchcase(name, pat) for pat in exclude):
            continue
        found[name] = module
    return found


def split_tied(layers: dict[str, nn.Module]) -> tuple[dict[str, nn.Module], dict[str, list[str]]]:
    """(one layer per distinct weight Parameter, {that layer: the other layers sharing it})."""
    first: dict[int, str] = {}
    unique: dict[str, nn.Module] = {}
    tied: dict[str, list[str]] = {}
    for name, module in layers.items():
        weight = module.weight
        if parametrize.is_parametrized(module, "weight"):
            weight = dense_weight(module)
        owner = first.setdefault(id(weight), name)
        if owner == name:
            unique[name] = module
        else:
            tied.setdefault(owner, []).append(name)
    return unique, tied
