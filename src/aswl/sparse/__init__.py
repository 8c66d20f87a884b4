"""The mask engine: masked-weight parametrization, top-k masks (per layer and global),
scores to masks (exact or sampled top-k, :mod:`.threshold`), and the schedules that own
*when*. It knows no algorithm: what a method adds per layer (ASWL's attention and output
scaling) lives with that method, in :mod:`aswl.methods`."""

from aswl.sparse.discovery import (
    PRUNABLE_TYPES,
    TensorSlot,
    attach_layers,
    describe_dense,
    detach_layers,
    find_prunable,
    resolve_layer,
    split_tied,
    strip_layers,
)
from aswl.sparse.masked import (
    MaskedWeight,
    attach_alias,
    attach_masks,
    dense_weight,
    global_topk_masks,
    keep_count,
    masked_weight,
    remove_masks,
    topk_mask,
)
from aswl.sparse.schedules import Schedule, build_schedule

__all__ = [
    "PRUNABLE_TYPES", "MaskedWeight", "attach_alias", "attach_masks", "dense_weight",
    "TensorSlot", "attach_layers", "describe_dense", "detach_layers", "resolve_layer",
    "strip_layers",
    "find_prunable", "global_topk_masks", "keep_count", "masked_weight", "remove_masks",
    "split_tied", "topk_mask",
    "Schedule", "build_schedule",
]
