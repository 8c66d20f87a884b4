"""Sparsity schedules: frozen dataclasses whose value depends only on the step, so a resumed
run needs no schedule state."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ConstantSchedule:
    """The target from the first step (one-shot / fixed-budget methods)."""

    final: float

    def __call__(self, step: int) -> float:
        return self.final


@dataclass(frozen=True)
class CubicSchedule:
    """Gradual pruning ramp of Zhu & Gupta (2017), "To prune, or not to prune":
    s(t) = s_f + (s_i - s_f) (1 - (t - t0) / (t1 - t0))^3 for t0 <= t <= t1.
    """

    final: float
    begin_step: int
    end_step: int
    initial: float = 0.0

    def __call__(self, step: int) -> float:
        if step <= self.begin_step:
            return self.initial
        if step >= self.end_step or self.end_step <= self.begin_step:
            return self.final
        progress = (step - self.begin_step) / (self.end_step - self.begin_step)
        return self.final + (self.initial - self.final) * (1.0 - progress) ** 3


def build_schedule(kind: str, final: float, total_steps: int, begin: float = 0.0,
                   end: float = 0.75) -> ConstantSchedule | CubicSchedule:
    """``kind`` is ``constant`` or ``cubic``; ``begin``/``end`` are fractions of ``total_steps``."""
    if kind == "constant":
        return ConstantSchedule(final)
    if kind == "cubic":
        return CubicSchedule(final, int(begin * total_steps), int(end * total_steps))
    raise ValueError(f"unknown sparsity schedule {kind!r}; use 'cubic' or 'constant'")
