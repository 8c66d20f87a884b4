"""What the framework callbacks (Lightning, Hugging Face) share: their settings, starting and
finishing the method once per run, and the checkpoint state that survives the framework.

A framework checkpoint holds the model as **plain weights** (``w * mask``, pruned weights
exactly zero, the keys a fresh model has), so the framework's own loaders (Lightning's
``load_from_checkpoint``, ``from_pretrained``) give the pruned model. What resuming needs
besides (the dense weights under the masks, the masks, the method's per-layer parameters and
its :meth:`~aswl.methods.SparseMethod.state_dict`) is the callback's own state
(:meth:`SparsifyCallbackBase.checkpoint_state`), restored right after the method is attached.
"""

from __future__ import annotations

import logging
import warnings
from typing import Any

import torch
from torch import Tensor, nn

from aswl.integrations import sparsify
from aswl.methods import ConfigError, SparseMethod
from aswl.sparse import MaskedWeight

log = logging.getLogger(__name__)

STATE_VERSION = 1


def masked_slots(root: nn.Module) -> list[tuple[str, nn.Module, str]]:
    """(module path, module, tensor name) of every tensor that carries a method's mask."""
    slots = []
    for path, module in root.named_modules():
        plists = getattr(module, "parametrizations", None)
        if not isinstance(plists, nn.ModuleDict):
            continue
        for tensor, plist in plists.items():
            if any(isinstance(each, MaskedWeight) for each in plist):
                slots.append((path, module, tensor))
    return slots


def _join(*parts: str) -> str:
    return ".".join(part for part in parts if part)


def _folded_values(method: SparseMethod) -> dict[str, Tensor] | None:
    """The exported model's tensors when the method folds something into the weights (ASWL's
    output scaling), else None (``w * mask`` is then the plain weight)."""
    if type(method).fold_into_weights is SparseMethod.fold_into_weights:
        return None
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return method.export().state_dict()


def to_plain_state(root: nn.Module, state: dict[str, Any], prefix: str = "",
                   method: SparseMethod | None = None) -> None:
    """Rewrite ``state`` (``root.state_dict()``, keys under ``prefix``) in place: each masked
    tensor's parametrization keys become the plain key with ``w * mask``; key order is kept
    and weights that are one Parameter stay one tensor (tied stays tied)."""
    slots = masked_slots(root)
    if not slots:
        return
    replace: dict[str, tuple[str, Tensor]] = {}
    drop: set[str] = set()
    shared: dict[int, Tensor] = {}
    for path, module, tensor in slots:
        plist = module.parametrizations[tensor]
        raw = _join(prefix, path, "parametrizations", tensor) + "."
        keys = [key for key in state if key.startswith(raw)]
        if not keys:
            continue
        if id(plist.original) not in shared:
            with torch.no_grad():
                shared[id(plist.original)] = getattr(module, tensor).detach().clone()
        replace[keys[0]] = _join(prefix, path, tensor), shared[id(plist.original)]
        drop.update(keys[1:])
    items = list(state.items())
    state.clear()
    for key, value in items:
        if key in replace:
            plain_key, plain = replace[key]
            state[plain_key] = plain
        elif key not in drop:
            state[key] = value
    folded = _folded_values(method) if method is not None else None
    if folded is not None:  # the fold scales weights and biases: take the exported tensors
        for key in state:
            local = key[len(prefix):]
            if key.startswith(prefix) and local in folded:
                state[key] = folded[local]


def accept_plain_state(root: nn.Module) -> Any:
    """Let ``root.load_state_dict`` take plain weights (a checkpoint from
    :func:`to_plain_state`) while masks are attached: each plain weight becomes the dense
    weight; masks and the method's parameters keep their values (the callback restores them
    from its own state). Returns the hook handle."""

    def hook(module: nn.Module, state: dict[str, Any], prefix: str, *args: Any) -> None:
        for path, owner, tensor in masked_slots(module):
            plain_key = prefix + _join(path, tensor)
            raw = prefix + _join(path, "parametrizations", tensor) + "."
            if plain_key not in state or raw + "original" in state:
                continue
            state[raw + "original"] = state.pop(plain_key)
            for key, value in owner.parametrizations[tensor].state_dict().items():
                state.setdefault(raw + key, value)

    return root.register_load_state_dict_pre_hook(hook)


def method_tensors(root: nn.Module) -> dict[str, dict[str, Tensor]]:
    """The dense weights, masks and method parameters of every masked tensor, by path."""
    return {_join(path, tensor): {key: value.detach().clone() for key, value
                                  in module.parametrizations[tensor].state_dict().items()}
            for path, module, tensor in masked_slots(root)}


def load_method_tensors(root: nn.Module, saved: dict[str, dict[str, Tensor]]) -> None:
    """Copy :func:`method_tensors` back in place (the optimiser keeps its Parameters)."""
    slots = {_join(path, tensor): (module, tensor) for path, module, tensor in masked_slots(root)}
    if set(saved) != set(slots):
        raise ConfigError(f"the checkpoint's masked tensors {sorted(saved)[:6]} are not this "
                          f"model's {sorted(slots)[:6]}: resume with the same model and the "
                          "same method options")
    with torch.no_grad():
        for key, values in saved.items():
            module, tensor = slots[key]
            module.parametrizations[tensor].load_state_dict(values)


class SparsifyCallbackBase:
    """Settings of a framework callback; :meth:`start` calls :func:`aswl.sparsify` once."""

    def __init__(self, target_sparsity: float | None = None, method: str = "aswl",
                 total_steps: int | None = None, finalize: bool = True,
                 **options: Any) -> None:
        super().__init__()
        self.target_sparsity = target_sparsity
        self.method_name = method
        self.total_steps = total_steps
        self.finalize = finalize
        self.options = options
        self.method: SparseMethod | None = None
        self._pending: dict[str, Any] | None = None

    def start(self, model: nn.Module, optimizer: Any, default_steps: int,
              scaler: Any = None) -> None:
        """Attach the method, unless a previous fit already did (it then continues); then
        restore a checkpoint's state if one is waiting. ``scaler``: the framework's float16
        ``GradScaler`` (or True), checked by :func:`aswl.sparsify`."""
        if self.method is None:
            self.method = sparsify(model, optimizer, total_steps=self.total_steps or default_steps,
                                   target_sparsity=self.target_sparsity,
                                   method=self.method_name, scaler=scaler, **self.options)
            self._load_hook = accept_plain_state(model)
        if self._pending is not None:
            state, self._pending = self._pending, None
            self.restore(state)

    def finish(self) -> None:
        if self.finalize and self.method is not None:
            self.method.finalize()

    def checkpoint_state(self) -> dict[str, Any]:
        """What resuming needs beside the plain weights (empty before the method exists)."""
        if self.method is None:
            return {}
        return {"version": STATE_VERSION, "method_name": self.method.name,
                "method": self.method.state_dict(),
                "tensors": method_tensors(self.method.model)}

    def restore(self, state: dict[str, Any]) -> None:
        """Restore :meth:`checkpoint_state`: now if the method is attached, else as soon as
        :meth:`start` attaches it."""
        if not state:
            return
        if "tensors" not in state:
            log.warning("this checkpoint's sparsity state predates resumable checkpoints (no "
                        "masks or dense weights in it): the method starts afresh")
            return
        if self.method is None:
            self._pending = state
            return
        if state.get("method_name") != self.method.name:
            raise ConfigError(f"the checkpoint was written by method {state.get('method_name')!r}"
                              f", this callback runs {self.method.name!r}: resume with the same "
                              "method")
        load_method_tensors(self.method.model, state["tensors"])
        self.method.load_state_dict(state["method"])
        log.info("%s: resumed at step %d (sparsity %.4f)", self.method.name,
                 self.method.step_count, self.method.global_sparsity())
