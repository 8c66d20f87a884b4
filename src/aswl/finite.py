"""Non-finite numbers: said once (with the step) while training, refused when a model is
handed back.

A single NaN sample makes every later gradient NaN; logging each skipped step would flood the
log while the weights are already lost. :func:`warn_once` logs the first occurrence with its
step and counts the rest; :func:`check_finite` is what :meth:`SparseMethod.export` runs so that
a model with NaN or infinite weights is never returned as if it were fine.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping

import torch
from torch import Tensor

log = logging.getLogger(__name__)


class NonFiniteError(ValueError):
    """A model holds NaN or infinite weights; the message names the tensors."""


def warn_once(count: int, what: str, step: int) -> int:
    """One more occurrence after ``count``: log ``what`` at ``step`` the first time; return
    the new count (its owner keeps it, e.g. ``SparseMethod.nonfinite_steps``)."""
    count += 1
    if count == 1:
        log.warning("%s at step %d (later ones are counted, not logged; the weights may "
                    "already be NaN: lower the learning rate, add gradient clipping, or check "
                    "the data)", what, step)
    return count


def nonfinite_tensors(state: Mapping[str, Tensor]) -> list[str]:
    """Names of the floating-point tensors of ``state`` that hold NaN or infinity."""
    return [key for key, value in state.items()
            if value.is_floating_point() and not bool(torch.isfinite(value).all())]


def check_finite(state: Mapping[str, Tensor], what: str, extra: str = "") -> None:
    """Raise :class:`NonFiniteError` naming the tensors of ``state`` with NaN or infinity."""
    bad = nonfinite_tensors(state)
    if bad:
        shown = ", ".join(bad[:5]) + (f" and {len(bad) - 5} more" if len(bad) > 5 else "")
        raise NonFiniteError(f"{what} has non-finite weights (NaN or infinity) in {shown}"
                             f"{extra}; it is not usable. Train again with a lower learning "
                             "rate or gradient clipping, or check the data for NaN")
