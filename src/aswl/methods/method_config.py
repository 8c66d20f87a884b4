"""The fields every method shares, and those of the gradual schedule.

A method's config adds only the fields its method uses (``SparseMethod`` refuses any other
option, naming the method and the option). A field every method must accept goes into
:class:`MethodConfig`; one that only the methods on the gradual schedule use goes into
:class:`GradualConfig`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from aswl.checks import check, check_finite

MAX_COEFFICIENT = 1000.0
"""Largest penalty coefficient a method option may take (``weight_decay``, ``gamma``,
``sparsity_penalty``; the run config's ``weight_decay`` has the same bound): the published
values are 1e-5 to 0.1, and beyond this the penalty swamps the loss or overflows the step."""
MAX_INTERVAL = 10**6
"""Largest step interval a method option may take (``mask_interval``, ``attention_interval``,
``count_interval``): the defaults are 1 to 16, and 10**6 steps is more than a whole run of
90 ImageNet epochs at batch 256 (about 450,000 steps)."""


@dataclass
class MethodConfig:
    """Fields shared by every method (a method's config adds only the fields it uses)."""

    target_sparsity: float = 0.9
    """Fraction of prunable weights that are zero at the end."""
    include: list[str] | None = None
    """Glob patterns of layer names to prune (default: every Conv and Linear layer)."""
    exclude: list[str] = field(default_factory=list)
    """Glob patterns of layer names never pruned."""
    prune_embeddings: bool = False
    """Prune Embedding layers too (an embedding tied to a pruned output layer always is)."""

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field."""
        check_finite(self)
        check(0.0 <= self.target_sparsity < 1.0, "target_sparsity", self.target_sparsity,
              "a fraction in [0, 1) (every layer keeps at least one weight)")


@dataclass
class GradualConfig(MethodConfig):
    """Fields of the methods that follow the gradual schedule (:class:`~aswl.sparse.Gradual`)."""

    mask_interval: int = 1
    """Recompute masks every this many optimiser steps."""
    schedule: str = "cubic"
    """Sparsity ramp: ``cubic`` (Zhu & Gupta 2017) or ``constant``."""
    ramp_begin: float = 0.0
    """Fraction of training at which the ramp starts."""
    ramp_end: float = 0.75
    """Fraction of training at which the final sparsity is reached."""

    def validate(self) -> None:
        super().validate()
        check(1 <= self.mask_interval <= MAX_INTERVAL, "mask_interval", self.mask_interval,
              "an integer in [1, 10**6]")
        check(self.schedule in ("cubic", "constant"), "schedule", self.schedule,
              "'cubic' or 'constant'")
        check(0.0 <= self.ramp_begin <= self.ramp_end <= 1.0, "ramp_begin/ramp_end",
              (self.ramp_begin, self.ramp_end), "fractions with 0 <= ramp_begin <= ramp_end <= 1")
