"""Guards around a method's life cycle: warnings that point at the user's line, checked
state loading, and the warning for a method finalised before any training step."""

from __future__ import annotations

import functools
import sys
import warnings
from collections.abc import Callable
from typing import Any


def warn_user(message: str) -> None:
    """A UserWarning pointing at the first caller outside aswl (the user's line)."""
    level, frame = 1, sys._getframe(0)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("aswl"):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


class MethodStateError(ValueError):
    """A method state that is not this method's ``state_dict()`` (empty, another method's)."""


def checked_load(load: Callable[[Any, dict[str, Any]], None]) -> Callable[..., None]:
    """Wrap a ``load_state_dict``: check the state first, name the method in any error."""
    @functools.wraps(load)
    def checked(self: Any, state: dict[str, Any]) -> None:
        self.check_state(state)
        try:
            load(self, state)
        except MethodStateError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise MethodStateError(f"cannot load this state into method {self.name!r} "
                                   f"({type(err).__name__}: {err}); pass the state_dict() of "
                                   "the same method on the same model") from err

    return checked


def untrained_hint(method: Any) -> str:
    """How to train: ``aswl.sparsify``'s hooks step the method, an explicit loop must."""
    if getattr(method, "step_hooks", None):
        return ("aswl.sparsify steps the method at every optimizer.step(): train first, then "
                "finalize() and export()")
    return ("Call method.step() after every optimizer.step() (or use aswl.training_step), "
            "then finalize()")


def warn_untrained(finalize: Callable[[Any], None]) -> Callable[..., None]:
    """Wrap a ``finalize``: warn when no training step came before it."""
    @functools.wraps(finalize)
    def warned(self: Any) -> None:
        if self.step_count == 0 and not getattr(self, "_warned_untrained", False):
            self._warned_untrained = True
            warn_user(f"{self.name}: finalize() before any step(): the final masks come "
                      "from the untrained weights (one-shot pruning at initialisation). "
                      + untrained_hint(self))
        finalize(self)

    return warned


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
