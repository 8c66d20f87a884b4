"""Export: plain models with exact zeros, compact sparse files, reports and plots."""

from aswl.export.compact import ExportError, load_compact, save_compact, save_dense
from aswl.export.report import format_table, layer_flops, layer_table

__all__ = ["ExportError", "format_table", "layer_flops", "layer_table", "load_compact",
           "save_compact", "save_dense"]
from aswl.export.sparse_modules import SparseLinear, to_sparse_inference  # noqa: E402

__all__ += ["SparseLinear", "to_sparse_inference"]
