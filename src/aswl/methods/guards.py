"""Guards around a method's life cycle: warnings that point at the user's line, the error
of a state that is not the method's, and the hint for a method used before any training
step (``SparseMethod.load_state_dict`` and ``SparseMethod.warn_untrained`` use them)."""

from __future__ import annotations

import sys
import warnings
from typing import Any


def warn_user(message: str) -> None:
    """A UserWarning pointing at the first caller outside aswl (the user's line)."""
    level, frame = 1, sys._getframe(0)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("aswl"):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


class MethodStateError(ValueError):
    """A method state that is not this method's ``state_dict()`` (empty, another method's)."""


def untrained_hint(method: Any) -> str:
    """How to train: ``aswl.sparsify``'s hooks step the method, an explicit loop must."""
    if method.step_hooks:
        return ("aswl.sparsify steps the method at every optimizer.step(): train first, then "
                "finalize() and export()")
    return ("Call method.step() after every optimizer.step() (or use aswl.training_step), "
            "then finalize()")


def check_model(model: Any) -> None:
    """What a method attaches to: an ``nn.Module`` in Python (not TorchScript) with real
    weights (not on the meta device); a :class:`TypeError` or :class:`ValueError` naming the
    ``model`` argument otherwise."""
    import torch
    from torch import nn

    if not isinstance(model, nn.Module):
        hint = " (a path? build the model and load its weights first)" if isinstance(
            model, (str, bytes)) or hasattr(model, "__fspath__") else ""
        raise TypeError(f"model must be a torch.nn.Module, got {type(model).__name__}{hint}")
    if isinstance(model, torch.jit.ScriptModule):
        raise TypeError("model is a TorchScript module (torch.jit.script or trace), whose layers "
                        "cannot be masked: attach to the Python nn.Module, and script the "
                        "plain model of method.export() after training")
    meta = next((name for name, tensor in [*model.named_parameters(), *model.named_buffers()]
                 if tensor.is_meta), None)
    if meta is not None:
        raise ValueError(f"model has weights on the meta device ({meta}), which hold no values: "
                         "materialise them first (model.to_empty(device=...), then initialise "
                         "or load the weights)")
