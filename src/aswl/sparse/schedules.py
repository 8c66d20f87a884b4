"""Schedules own *when*: each timing rule is a small named object a method owns.

Sparsity schedules answer three questions with one rounding rule (:func:`at_step`: a fraction
of training is the step ``int(fraction * total_steps)``):

* ``sparsity(step)``: the global sparsity asked for after optimiser step ``step``;
* ``update_due(step)``: recompute the masks after optimiser step ``step``?
* ``done(step)``: from ``step`` on the schedule changes nothing (the sparsity is final and no
  mask update of the schedule's own changes it; ASWL freezes there, the trainer's
  best-validation selection starts there).

They are :class:`Cubic` and :class:`Constant` (:class:`Gradual`: the ramp, every
``interval`` steps), :class:`OneShot` and :class:`Rounds` (magnitude, SNIP, IMP),
:class:`Periodic` (RigL) and :class:`Never` (dense). The methods' other timing rules:
:class:`Every` (a periodic event: ASWL's attention, count and prior intervals),
:class:`Freeze` (masks fixed from the step a sparsity schedule is done) and
:class:`CosineDecay` (RigL's drop fraction).

All are frozen dataclasses whose answers depend on the step only, so a resumed run needs no
schedule state. A new schedule is one more class here: no method dispatches on its type.
"""

from __future__ import annotations

import math
from dataclasses import dataclass


def at_step(fraction: float, total_steps: int) -> int:
    """The one rounding rule: the step at ``fraction`` of ``total_steps`` (rounded down)."""
    return int(fraction * total_steps)


class Schedule:
    """The sparsity schedule's interface (see the module docstring)."""

    def sparsity(self, step: int) -> float:
        """The global sparsity asked for after optimiser step ``step``."""
        raise NotImplementedError

    def __call__(self, step: int) -> float:
        return self.sparsity(step)

    def update_due(self, step: int) -> bool:
        """Recompute the masks after optimiser step ``step``?"""
        raise NotImplementedError

    def done(self, step: int) -> bool:
        """From ``step`` on, the schedule changes nothing any more."""
        raise NotImplementedError

    def ramp_steps(self) -> int:
        """Steps over which the sparsity ramps (0: it does not ramp)."""
        return 0


@dataclass(frozen=True)
class Gradual(Schedule):
    """The gradual schedules' fields and timing: masks every ``interval`` steps (until
    ``end_step`` and after: the masks follow the weights); done from ``end_step``."""

    final: float
    begin_step: int = 0
    end_step: int = 0
    interval: int = 1

    def sparsity(self, step: int) -> float:
        return self.final

    def update_due(self, step: int) -> bool:
        return step % self.interval == 0

    def done(self, step: int) -> bool:
        return step >= self.end_step


class Constant(Gradual):
    """``final`` from the first step (masks every ``interval`` steps)."""


@dataclass(frozen=True)
class Cubic(Gradual):
    """The ramp of Zhu & Gupta 2017 ("To prune, or not to prune"):
    s(t) = s_f + (s_i - s_f) (1 - (t - t0) / (t1 - t0))^3 between ``begin_step`` (t0) and
    ``end_step`` (t1), masks every ``interval`` steps."""

    initial: float = 0.0

    def sparsity(self, step: int) -> float:
        if step <= self.begin_step:
            return self.initial
        if step >= self.end_step or self.end_step <= self.begin_step:
            return self.final
        progress = (step - self.begin_step) / (self.end_step - self.begin_step)
        return self.final + (self.initial - self.final) * (1.0 - progress) ** 3

    def ramp_steps(self) -> int:
        return self.end_step - self.begin_step


GRADUAL: dict[str, type[Gradual]] = {"cubic": Cubic, "constant": Constant}
"""The gradual schedules by the name a config gives them (``schedule``)."""


@dataclass(frozen=True)
class Rounds(Schedule):
    """Masks after each step of ``at`` (non-decreasing); after r of the R steps the sparsity
    is 1 - (1 - final)^(r / R): each round removes the same fraction of what is left
    (iterative magnitude pruning)."""

    final: float
    at: tuple[int, ...]

    def rounds_done(self, step: int) -> int:
        """How many of the ``at`` steps are behind ``step``."""
        return sum(1 for at in self.at if step >= at)

    def sparsity(self, step: int) -> float:
        done = self.rounds_done(step)
        if done == len(self.at):
            return self.final
        return 1.0 - (1.0 - self.final) ** (done / len(self.at))

    def update_due(self, step: int) -> bool:
        return step in self.at

    def done(self, step: int) -> bool:
        return self.rounds_done(step) == len(self.at)


class OneShot(Rounds):
    """Dense until step ``at``, then ``final`` (one mask update after step ``at``)."""

    def __init__(self, final: float, at: int) -> None:
        super().__init__(final, (at,))

    @property
    def step(self) -> int:
        """The step after which the one mask update happens."""
        return self.at[0]


@dataclass(frozen=True)
class Periodic(Schedule):
    """A constant sparsity, masks every ``interval`` steps before ``end_step`` (RigL)."""

    final: float
    interval: int
    end_step: int

    def sparsity(self, step: int) -> float:
        return self.final

    def update_due(self, step: int) -> bool:
        return 0 < step < self.end_step and step % self.interval == 0

    def done(self, step: int) -> bool:
        return step >= self.end_step


@dataclass(frozen=True)
class Never(Schedule):
    """No pruning: sparsity 0, no mask update, done from the start (dense training)."""

    def sparsity(self, step: int) -> float:
        return 0.0

    def update_due(self, step: int) -> bool:
        return False

    def done(self, step: int) -> bool:
        return True


@dataclass(frozen=True)
class Every:
    """A periodic event: due after every ``interval``-th step (ASWL's attention step, its
    exact count and its prior refresh)."""

    interval: int

    def due(self, step: int) -> bool:
        return step % self.interval == 0

    @classmethod
    def spread(cls, steps: int, multiple: int, updates: int) -> Every:
        """About ``updates`` events over ``steps`` steps (a ramp), at a multiple of
        ``multiple`` steps (an attention change between two mask updates would not be seen
        by them)."""
        return cls(multiple * max(1, round(steps / updates / multiple)))


@dataclass(frozen=True)
class Freeze:
    """The masks (and what sets them) are fixed from the step ``schedule`` is done, when
    ``enabled``."""

    schedule: Schedule
    enabled: bool = True

    def due(self, step: int) -> bool:
        return self.enabled and self.schedule.done(step)


@dataclass(frozen=True)
class CosineDecay:
    """``initial / 2 * (1 + cos(pi t / end_step))``, 0 from ``end_step`` (RigL's drop
    fraction)."""

    initial: float
    end_step: int

    def value(self, step: int) -> float:
        if self.end_step <= 0:
            return 0.0
        progress = min(1.0, step / self.end_step)
        return self.initial / 2 * (1.0 + math.cos(math.pi * progress))


def gradual(final: float, begin_step: int, end_step: int, interval: int = 1,
            shape: str = "cubic") -> Gradual:
    """A ramp (``shape='cubic'``) or the final sparsity from the start (``'constant'``)
    until ``end_step``, masks every ``interval`` steps."""
    if shape not in GRADUAL:
        raise ValueError(f"unknown sparsity schedule {shape!r}; use one of {sorted(GRADUAL)}")
    return GRADUAL[shape](final, begin_step, end_step, interval)


def build_schedule(shape: str, final: float, total_steps: int, begin: float = 0.0,
                   end: float = 0.75, interval: int = 1) -> Gradual:
    """A :func:`gradual` schedule: ``shape`` is ``cubic`` or ``constant``; ``begin``/``end``
    are fractions of ``total_steps``."""
    return gradual(final, at_step(begin, total_steps), at_step(end, total_steps), interval, shape)
