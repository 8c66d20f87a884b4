"""Batches and evaluation live in :mod:`aswl.data.loader`; these names are re-exported here."""

from aswl.data.loader import Ranks, batches, evaluate, steps_per_epoch

__all__ = ["Ranks", "batches", "evaluate", "steps_per_epoch"]
