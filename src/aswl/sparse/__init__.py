"""The mask engine: knows no algorithm."""

from aswl.sparse.masked import (
    PRUNABLE_TYPES,
    MaskedWeight,
    attach_masks,
    dense_weight,
    find_prunable,
    keep_count,
    masked_weight,
    remove_masks,
    topk_mask,
)
from aswl.sparse.schedules import ConstantSchedule, CubicSchedule, build_schedule

__all__ = [
    "PRUNABLE_TYPES", "MaskedWeight", "attach_masks", "dense_weight", "find_prunable",
    "keep_count", "masked_weight", "remove_masks", "topk_mask",
    "ConstantSchedule", "CubicSchedule", "build_schedule",
]
