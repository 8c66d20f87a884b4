"""aswl: learn sparse networks from scratch with attention-based simultaneous sparse structure
and weight learning (He, Shi & Dong 2021, arXiv 2111.02399)."""

from aswl.integrations import sparsify
from aswl.methods import (
    ASWL,
    ConfigError,
    SparseMethod,
    create_method,
    list_methods,
    register_method,
    training_step,
)

__version__ = "0.1.0"

__all__ = ["ASWL", "ConfigError", "SparseMethod", "__version__", "create_method",
           "list_methods", "register_method", "sparsify", "training_step"]
