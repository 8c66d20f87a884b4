"""Iterative magnitude pruning with retraining (Han et al. 2015; Frankle & Carbin 2019)."""

from __future__ import annotations

from dataclasses import dataclass

from aswl.methods.base import check, register_method
from aswl.methods.magnitude import MagnitudeFamily, ScopedConfig
from aswl.sparse.schedules import Rounds, at_step


@dataclass
class IMPConfig(ScopedConfig):
    rounds: int = 3
    """Number of prune/retrain cycles; each round keeps the same fraction of what is left."""
    ramp_begin: float = 0.0
    """Fraction of training at which the rounds start (the first round prunes one round
    after it)."""
    ramp_end: float = 0.75
    """Fraction of training at which the last round prunes."""

    def validate(self) -> None:
        super().validate()
        check(self.rounds >= 1, "rounds", self.rounds, "an integer >= 1")
        check(0.0 <= self.ramp_begin <= self.ramp_end <= 1.0, "ramp_begin/ramp_end",
              (self.ramp_begin, self.ramp_end), "fractions with 0 <= ramp_begin <= ramp_end <= 1")


@register_method("imp")
class IMP(MagnitudeFamily):
    """Iterative magnitude pruning: prune, retrain, repeat (Han et al., NeurIPS 2015, section
    3.3; the geometric per-round rate of Frankle & Carbin, "The Lottery Ticket Hypothesis",
    ICLR 2019).

    ``rounds`` pruning steps are spread evenly over the ramp: round r (1..R) prunes at
    ``ramp_begin + r (ramp_end - ramp_begin) / R`` of training to sparsity
    ``1 - (1 - target)^(r / R)`` (each round removes the same fraction of the remaining
    weights), by magnitude per layer (or ``scope='global'``), then retrains with the masks
    frozen and pruned weights at zero until the next round. With the defaults (ramp 0 -> 0.75,
    3 rounds) training is four equal quarters: dense, then three prune/retrain cycles.
    No weight rewinding: retraining continues from the current weights (this is IMP with
    fine-tuning, not the lottery-ticket rewind).
    """

    config_class = IMPConfig
    config: IMPConfig

    def build_schedule(self) -> Rounds:
        """Round r prunes after the step at ``ramp_begin + r (ramp_end - ramp_begin) / R``."""
        cfg = self.config
        span = cfg.ramp_end - cfg.ramp_begin
        return Rounds(cfg.target_sparsity, tuple(
            at_step(cfg.ramp_begin + r * span / cfg.rounds, self.total_steps)
            for r in range(1, cfg.rounds + 1)))

    def prune_steps(self) -> list[int]:
        """The step after which each round prunes (non-decreasing)."""
        return list(self.schedule.at)
