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

