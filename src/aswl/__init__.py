"""aswl: learn sparse networks from scratch with attention-based simultaneous sparse structure
and weight learning (He, Shi & Dong 2021, arXiv 2111.02399)."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

__all__ = ["ASWL", "ConfigError", "SparseMethod", "__version__", "create_method",
           "list_methods", "profile_latency", "register_method", "sparsify", "training_step"]


def __getattr__(name: str) -> Any:
    """The public names load torch on first use, so that ``aswl --help`` (and Ctrl-C while
    it starts) stays light."""
    if name == "sparsify":
        from aswl.integrations import sparsify

        return sparsify
    if name == "profile_latency":
        from aswl.sparse.latency import profile_latency

        return profile_latency
    if name == "training_step":
        from aswl.train.step import training_step

        return training_step
    if name in __all__:
        import aswl.methods

        return getattr(aswl.methods, name)
    raise AttributeError(f"module 'aswl' has no attribute {name!r}")
