"""Which weights of a model are prunable: layer discovery by type and name patterns, the
layers that share one weight Parameter (tied weights), and what stays dense.

A layer is found by its module name (``features.0``) and pruned through its ``weight``.
Prunable types: Linear, Conv1d/2d/3d, ConvTranspose1d/2d/3d (so ``nn.MultiheadAttention``'s
``out_proj``) and, when asked (``embeddings=True``), Embedding. A weight that several modules
share (a language model's output layer tied to its input embedding) is one prunable weight:
all its modules are found together and share one mask; when an ``exclude`` pattern names
any of them, none is pruned. Recurrent layers (LSTM, GRU, RNN) are never prunable: their
fused kernels read the weights directly, past any mask.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Sequence

from torch import nn
from torch.nn.utils import parametrize

from aswl.config import ConfigError
from aswl.sparse.masked import dense_weight

log = logging.getLogger(__name__)

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d,
    nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
OPT_IN_TYPES: tuple[type[nn.Module], ...] = (nn.Embedding, nn.EmbeddingBag)
REFUSED_TYPES: tuple[type[nn.Module], ...] = (nn.RNNBase,)


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pat) for pat in patterns)


def _weight_of(module: nn.Module) -> nn.Parameter | None:
    """The (dense) weight Parameter a module prunes through, if it has one."""
    if parametrize.is_parametrized(module, "weight"):
        return dense_weight(module)
    weight = module._parameters.get("weight") if hasattr(module, "_parameters") else None
    return weight if isinstance(weight, nn.Parameter) else None


def find_prunable(model: nn.Module, include: Sequence[str] | None = None,
                  exclude: Sequence[str] = (), embeddings: bool = False) -> dict[str, nn.Module]:
    """Every prunable layer by fully qualified name, filtered by glob patterns.

    ``include`` (default: all) and ``exclude`` are :func:`fnmatch` patterns on the layer name;
    ``embeddings`` makes Embedding layers prunable too. A layer whose weight other modules
    share brings them along (they follow it, right after it); an excluded one keeps the whole
    group dense. A recurrent layer named by an ``include`` pattern is an error.
    """
    modules = dict(model.named_modules())
    users: dict[int, list[str]] = {}
    for name, module in modules.items():
        weight = _weight_of(module)
        if weight is not None:
            users.setdefault(id(weight), []).append(name)
    types = PRUNABLE_TYPES + (OPT_IN_TYPES if embeddings else ())
    found: dict[str, nn.Module] = {}
    for name, module in modules.items():
        if include and isinstance(module, REFUSED_TYPES) and _matches(name, include):
            raise ConfigError(f"layer {name!r} ({type(module).__name__}) is recurrent and cannot "
                              "be pruned (its fused kernel reads the weights past any mask): "
                              "remove it from include")
        if name in found or not isinstance(module, types):
            continue
        if (include and not _matches(name, include)) or _matches(name, exclude):
            continue
        weight = _weight_of(module)
        group = users.get(id(weight), [name]) if weight is not None else [name]
        vetoed = [other for other in group if _matches(other, exclude)]
        if vetoed:
            log.info("layer %s stays dense: its weight is shared with excluded %s", name, vetoed)
            continue
        found[name] = module
        for other in group:
            if other != name:
                found[other] = modules[other]
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


def describe_dense(model: nn.Module, layers: dict[str, nn.Module], method: str = "aswl") -> str:
    """Say which parameters stay dense and what fraction of the model's parameters they hold.

    Logged once when a method attaches: a WARNING when a weight matrix stays dense because of
    its layer type (recurrent, embedding not opted in, a tensor that is not a layer's
    ``weight``), INFO otherwise. Returns the message.
    """
    pruned = {id(_weight_of(module)) for module in layers.values()}
    seen: set[int] = set()
    total = dense = small = 0
    by_type: list[str] = []
    excluded: list[str] = []
    for name, param in model.named_parameters():
        if id(param) in seen:
            continue
        seen.add(id(param))
        total += param.numel()
        if id(param) in pruned:
            continue
        dense += param.numel()
        if param.dim() < 2:
            small += param.numel()
            continue
        path, _, tensor = name.rpartition(".")
        owner = model.get_submodule(path)
        if tensor == "weight" and isinstance(owner, PRUNABLE_TYPES):
            excluded.append(name)
        else:
            reason = ("recurrent, not prunable" if isinstance(owner, REFUSED_TYPES) else
                      "embedding: prune_embeddings=true prunes it"
                      if isinstance(owner, OPT_IN_TYPES) else "not a prunable layer's weight")
            by_type.append(f"{name} ({reason})")
    if not total:
        return ""
    message = (f"{method}: pruning {len(layers)} weight tensor(s); {dense / total:.1%} of the "
               f"model's {total:,} parameters stay dense")
    for label, names in (("weight tensors", by_type), ("excluded", excluded)):
        if names:
            more = f" and {len(names) - 6} more" if len(names) > 6 else ""
            message += f"; {label} {', '.join(names[:6])}{more}"
    if small:
        message += f"; biases and norm parameters {small / total:.1%}"
    log.log(logging.WARNING if by_type else logging.INFO, message)
    return message
