"""Export: plain models with exact zeros, compact sparse files, reports and plots."""

from aswl.export.compact import (
    ExportError,
    load_compact,
    load_compact_state,
    save_compact,
    save_dense,
)
from aswl.export.report import format_table, layer_flops, layer_table
from aswl.export.sparse_modules import SparseConv2d, SparseLinear, to_sparse_inference

__all__ = ["ExportError", "SparseConv2d", "SparseLinear", "format_table", "layer_flops",
           "layer_table", "load_compact", "load_compact_state", "save_compact", "save_dense",
           "to_sparse_inference"]
