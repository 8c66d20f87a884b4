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
schedule state. A method picks its schedule (``SparseMethod.build_schedule``): one class,
:class:`Schedule`, built as gradual (cubic or constant, every ``interval`` steps), one-shot,
rounds (IMP), periodic (RigL) or never (dense).
"""

from __future__ import annotations

from dataclasses import dataclass


def at_step(fraction: float, total_steps: int) -> int:
    """The one rounding rule: the step at ``fraction`` of ``total_steps`` (rounded down)."""
    return int(fraction * total_steps)


KINDS = ("cubic", "constant", "steps", "periodic", "never")


@dataclass(frozen=True)
class Schedule:
    """When, for every method (see the module docstring); built by :func:`gradual`,
    :func:`one_shot`, :func:`rounds`, :func:`periodic` or :func:`never`.

    ``kind``: ``cubic`` (the ramp of Zhu & Gupta 2017, "To prune, or not to prune",
    s(t) = s_f + (s_i - s_f) (1 - (t - t0) / (t1 - t0))^3 between ``begin_step`` and
    ``end_step``, masks every ``interval`` steps), ``constant`` (``final`` from the first
    step, masks every ``interval`` steps until ``end_step`` and after), ``steps`` (masks after
    each step of ``at``; after r of the R steps the sparsity is 1 - (1 - final)^(r / R)),
    ``periodic`` (``final`` throughout, masks every ``interval`` steps before ``end_step``)
    or ``never`` (no pruning).
    """

    kind: str
    final: float = 0.0
    begin_step: int = 0
    end_step: int = 0
    interval: int = 1
    at: tuple[int, ...] = ()
    initial: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown schedule kind {self.kind!r}; one of {KINDS}")

    def steps_done(self, step: int) -> int:
        """How many of the ``at`` steps are behind ``step`` (kind ``steps``)."""
        return sum(1 for at in self.at if step >= at)

    def sparsity(self, step: int) -> float:
        """The global sparsity asked for after optimiser step ``step``."""
        if self.kind == "never":
            return 0.0
        if self.kind in ("constant", "periodic"):
            return self.final
        if self.kind == "steps":
            done = self.steps_done(step)
            if done == len(self.at):
                return self.final
            return 1.0 - (1.0 - self.final) ** (done / len(self.at))
        if step <= self.begin_step:
            return self.initial
        if step >= self.end_step or self.end_step <= self.begin_step:
            return self.final
        progress = (step - self.begin_step) / (self.end_step - self.begin_step)
        return self.final + (self.initial - self.final) * (1.0 - progress) ** 3

    __call__ = sparsity

    def update_due(self, step: int) -> bool:
        """Recompute the masks after optimiser step ``step``?"""
        if self.kind == "never":
            return False
        if self.kind == "steps":
            return step in self.at
        if self.kind == "periodic":
            return 0 < step < self.end_step and step % self.interval == 0
        return step % self.interval == 0

    def done(self, step: int) -> bool:
        """From ``step`` on, the schedule changes nothing any more."""
        if self.kind == "never":
            return True
        if self.kind == "steps":
            return self.steps_done(step) == len(self.at)
        return step >= self.end_step


def gradual(final: float, begin_step: int, end_step: int, interval: int = 1,
            shape: str = "cubic") -> Schedule:
    """A ramp (``shape='cubic'``) or the final sparsity from the start (``'constant'``)
    until ``end_step``, masks every ``interval`` steps."""
    if shape not in ("cubic", "constant"):
        raise ValueError(f"unknown sparsity schedule {shape!r}; use 'cubic' or 'constant'")
    return Schedule(shape, final, begin_step, end_step, interval)


def one_shot(final: float, at: int) -> Schedule:
    """Dense until ``at``, then ``final`` (one mask update after step ``at``)."""
    return Schedule("steps", final, at=(at,))


def rounds(final: float, at: tuple[int, ...]) -> Schedule:
    """Prune in rounds after the steps ``at`` (non-decreasing), each round removing the same
    fraction of what is left (iterative magnitude pruning)."""
    return Schedule("steps", final, at=tuple(at))


def periodic(final: float, interval: int, end_step: int) -> Schedule:
    """A constant sparsity, masks every ``interval`` steps before ``end_step`` (RigL)."""
    return Schedule("periodic", final, end_step=end_step, interval=interval)


def never() -> Schedule:
    """No pruning: sparsity 0, no mask update, done from the start (dense training)."""
    return Schedule("never")


def build_schedule(kind: str, final: float, total_steps: int, begin: float = 0.0,
                   end: float = 0.75, interval: int = 1) -> Schedule:
    """A :func:`gradual` schedule: ``kind`` is ``cubic`` or ``constant``; ``begin``/``end``
    are fractions of ``total_steps``."""
    return gradual(final, at_step(begin, total_steps), at_step(end, total_steps), interval, kind)
