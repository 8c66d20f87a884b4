"""Which weights of a model are prunable: layer discovery by type and name patterns, the
layers that share one weight Parameter (tied weights), and what stays dense.

A layer is found by its module name (``features.0``) and pruned through its ``weight``.
Prunable types: Linear, Conv1d/2d/3d, ConvTranspose1d/2d/3d (so ``nn.MultiheadAttention``'s
``out_proj``) and, when asked (``embeddings=True``), Embedding. A weight tensor under another
name (``nn.MultiheadAttention``'s ``in_proj_weight``, the q, k and v projections of every
``nn.TransformerEncoderLayer``) is a layer too, keyed by the tensor's full name
(``layers.0.self_attn.in_proj_weight``) and seen through a :class:`TensorSlot`, which gives it
the ``weight`` and ``parametrizations.weight`` every layer has. A weight that several modules
share (a language model's output layer tied to its input embedding) is one prunable weight:
all its modules are found together and share one mask; when an ``exclude`` pattern names
any of them, none is pruned. Recurrent layers (LSTM, GRU, RNN) are never prunable: their
fused kernels read the weights directly, past any mask.
"""

from __future__ import annotations

import fnmatch
import logging
from collections.abc import Sequence

import torch
from torch import nn
from torch.nn.utils import parametrize

from aswl.checks import ConfigError
from aswl.sparse.masked import MaskedWeight, attach_masks, dense_weight, remove_masks

log = logging.getLogger(__name__)

PRUNABLE_TYPES: tuple[type[nn.Module], ...] = (
    nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d,
    nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)
OPT_IN_TYPES: tuple[type[nn.Module], ...] = (nn.Embedding, nn.EmbeddingBag)
REFUSED_TYPES: tuple[type[nn.Module], ...] = (nn.RNNBase,)
SLOT_TENSORS: dict[type[nn.Module], tuple[str, ...]] = {
    nn.MultiheadAttention: ("in_proj_weight", "q_proj_weight", "k_proj_weight", "v_proj_weight")}
"""Weight tensors not called ``weight`` that are prunable, by module type."""


class TensorSlot(nn.Module):
    """A layer view of ``owner``'s weight tensor ``tensor``: ``.weight`` is that tensor (masked
    once attached) and ``.parametrizations.weight`` its parametrization list, so the mask
    engine and the methods treat it as any layer. It is not part of the model."""

    def __init__(self, owner: nn.Module, tensor: str) -> None:
        super().__init__()
        object.__setattr__(self, "owner", owner)  # not a child: the model keeps its modules
        self.tensor = tensor

    @property
    def weight(self) -> nn.Parameter:  # type: ignore[override]
        return getattr(self.owner, self.tensor)

    @property
    def parametrizations(self) -> nn.ModuleDict | None:  # type: ignore[override]
        plists = getattr(self.owner, "parametrizations", None)
        if not isinstance(plists, nn.ModuleDict) or self.tensor not in plists:
            return None
        return nn.ModuleDict({"weight": plists[self.tensor]})

    def extra_repr(self) -> str:
        return f"{type(self.owner).__name__}.{self.tensor}"


def resolve_layer(model: nn.Module, name: str) -> nn.Module:
    """The layer ``name`` of ``model``: a submodule, or a :class:`TensorSlot` for a tensor key."""
    path, _, tensor = name.rpartition(".")
    owner = model.get_submodule(path) if path else model
    if any(isinstance(owner, kind) and tensor in tensors
           for kind, tensors in SLOT_TENSORS.items()):
        return TensorSlot(owner, tensor)
    return model.get_submodule(name)


def _slots(name: str, module: nn.Module) -> list[tuple[str, TensorSlot]]:
    for kind, tensors in SLOT_TENSORS.items():
        if isinstance(module, kind):
            return [(_join(name, tensor), TensorSlot(module, tensor)) for tensor in tensors
                    if isinstance(module._parameters.get(tensor), nn.Parameter)
                    or parametrize.is_parametrized(module, tensor)]
    return []


def _join(*parts: str) -> str:
    return ".".join(part for part in parts if part)


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
        for key, slot in _slots(name, module):
            if ((not include or _matches(key, include) or _matches(name, include))
                    and not _matches(key, exclude) and not _matches(name, exclude)):
                found[key] = slot
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
    pruned = {id(dense_weight(layer) if parametrize.is_parametrized(layer, "weight")
                  else layer.weight) for layer in layers.values()}
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


def attach_layers(layers: dict[str, nn.Module],
                  straight_through: bool = True) -> dict[str, MaskedWeight]:
    """:func:`~aswl.sparse.attach_masks` for layers and :class:`TensorSlot` s alike."""
    out = attach_masks({k: m for k, m in layers.items() if not isinstance(m, TensorSlot)},
                       straight_through)
    for key, slot in layers.items():
        if isinstance(slot, TensorSlot):
            if parametrize.is_parametrized(slot.owner, slot.tensor):
                raise ValueError(f"layer {key!r} is already parametrized; attach one method only")
            masked = MaskedWeight(slot.weight, straight_through)
            parametrize.register_parametrization(slot.owner, slot.tensor, masked, unsafe=True)
            out[key] = masked
    return {key: out[key] for key in layers}


def detach_layers(layers: dict[str, nn.Module] | list[nn.Module]) -> None:
    """Undo a failed attach: every masked layer gets its dense weight back."""
    for layer in (layers.values() if isinstance(layers, dict) else layers):
        owner, tensor = ((layer.owner, layer.tensor) if isinstance(layer, TensorSlot)
                         else (layer, "weight"))
        if parametrize.is_parametrized(owner, tensor):
            parametrize.remove_parametrizations(owner, tensor, leave_parametrized=False)


def strip_layers(model: nn.Module, names: list[str]) -> None:
    """:func:`~aswl.sparse.remove_masks` on ``model`` (a copy) for the named layers, tensor
    keys included: each masked tensor becomes the plain ``w * mask``."""
    layers = [resolve_layer(model, name) for name in names]
    remove_masks(layer for layer in layers if not isinstance(layer, TensorSlot))
    by_owner: dict[int, tuple[nn.Module, list[str]]] = {}
    for slot in layers:
        if isinstance(slot, TensorSlot) and parametrize.is_parametrized(slot.owner, slot.tensor):
            by_owner.setdefault(id(slot.owner), (slot.owner, []))[1].append(slot.tensor)
    for owner, tensors in by_owner.values():
        if set(owner.parametrizations) != set(tensors):  # other parametrized tensors too
            with torch.no_grad():
                for tensor in tensors:
                    parametrize.remove_parametrizations(owner, tensor, leave_parametrized=True)
            continue
        with torch.no_grad():  # as remove_masks: the class injected is shared with the original
            plain = {t: nn.Parameter(getattr(owner, t).detach().clone(),
                                     requires_grad=owner.parametrizations[t].original.requires_grad)
                     for t in tensors}
        del owner._modules["parametrizations"]
        owner.__class__ = owner.__class__.__bases__[0]
        for tensor, value in plain.items():
            owner.register_parameter(tensor, value)
