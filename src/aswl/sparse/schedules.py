"""Schedules own *when*: the sparsity at each step, the steps with a mask update, and the step
from which nothing changes any more.

Every schedule answers three questions with one rounding rule (:func:`at_step`: a fraction of
training is the step ``int(fraction * total_steps)``):

* ``sparsity(step)``: the global sparsity asked for after optimiser step ``step``;
* ``update_due(step)``: recompute the masks after optimiser step ``step``?
* ``done(step)``: from ``step`` on the schedule changes nothing (the sparsity is final and no
  mask update of the schedule's own changes it; ASWL freezes there, the trainer's
  best-validation selection starts there).

They are frozen dataclasses whose answers depend on the step only, so a resumed run needs no
schedule state. A method picks its schedule (``SparseMethod.build_schedule``): gradual
(cubic or constant, every ``interval`` steps), one-shot, rounds (IMP), periodic (RigL) or
never (dense).
"""

from __future__ import annotations

from dataclasses import dataclass


def at_step(fraction: float, total_steps: int) -> int:
    """The one rounding rule: the step at ``fraction`` of ``total_steps`` (rounded down)."""
    return int(fraction * total_steps)


@dataclass(frozen=True)
class Gradual:
    """Sparsity from ``initial`` to ``final`` between ``begin_step`` and ``end_step``, masks
    every ``interval`` steps. ``shape='cubic'``: the ramp of Zhu & Gupta (2017), "To prune, or
    not to prune", s(t) = s_f + (s_i - s_f) (1 - (t - t0) / (t1 - t0))^3; ``'constant'``: the
    final sparsity from the first step (masks still move until ``end_step``)."""

    final: float
    begin_step: int
    end_step: int
    interval: int = 1
    shape: str = "cubic"
    initial: float = 0.0

    def sparsity(self, step: int) -> float:
        if self.shape == "constant":
            return self.final
        if step <= self.begin_step:
            return self.initial
        if step >= self.end_step or self.end_step <= self.begin_step:
            return self.final
        progress = (step - self.begin_step) / (self.end_step - self.begin_step)
        return self.final + (self.initial - self.final) * (1.0 - progress) ** 3

    __call__ = sparsity

    def update_due(self, step: int) -> bool:
        return step % self.interval == 0

    def done(self, step: int) -> bool:
        return step >= self.end_step


@dataclass(frozen=True)
class OneShot:
    """Dense until ``at``, then ``final`` (one mask update after step ``at``)."""

    final: float
    at: int

    def sparsity(self, step: int) -> float:
        return self.final if step >= self.at else 0.0

    def update_due(self, step: int) -> bool:
        return step == self.at

    def done(self, step: int) -> bool:
        return step >= self.at


@dataclass(frozen=True)
class Rounds:
    """Prune in rounds after the steps ``at`` (non-decreasing): after round r of R the
    sparsity is ``1 - (1 - final)^(r / R)`` (each round removes the same fraction of what is
    left; iterative magnitude pruning)."""

    final: float
    at: tuple[int, ...]

    def rounds_done(self, step: int) -> int:
        return sum(1 for at in self.at if step >= at)

    def sparsity(self, step: int) -> float:
        return 1.0 - (1.0 - self.final) ** (self.rounds_done(step) / len(self.at))

    def update_due(self, step: int) -> bool:
        return self.rounds_done(step) != self.rounds_done(step - 1)

    def done(self, step: int) -> bool:
        return self.rounds_done(step) == len(self.at)


@dataclass(frozen=True)
class Periodic:
    """A constant sparsity, masks updated every ``interval`` steps before ``end_step`` (RigL's
    drop and grow)."""

    final: float
    interval: int
    end_step: int

    def sparsity(self, step: int) -> float:
        return self.final

    def update_due(self, step: int) -> bool:
        return step > 0 and step % self.interval == 0 and step < self.end_step

    def done(self, step: int) -> bool:
        return step >= self.end_step


@dataclass(frozen=True)
class Never:
    """No pruning: sparsity 0, no mask update, done from the start (dense training)."""

    def sparsity(self, step: int) -> float:
        return 0.0

    def update_due(self, step: int) -> bool:
        return False

    def done(self, step: int) -> bool:
        return True


Schedule = Gradual | OneShot | Rounds | Periodic | Never


def build_schedule(kind: str, final: float, total_steps: int, begin: float = 0.0,
                   end: float = 0.75, interval: int = 1) -> Gradual:
    """A :class:`Gradual` schedule: ``kind`` is ``cubic`` or ``constant``; ``begin``/``end``
    are fractions of ``total_steps``."""
    if kind not in ("cubic", "constant"):
        raise ValueError(f"unknown sparsity schedule {kind!r}; use 'cubic' or 'constant'")
    return Gradual(final, at_step(begin, total_steps), at_step(end, total_steps), interval, kind)
