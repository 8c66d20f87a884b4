"""ASWL and the baselines, each registered by name on one shared base."""

from aswl.methods import aswl as _aswl  # noqa: F401  (registers)
from aswl.methods import (  # noqa: F401  (baselines; channel granularity)
    channel,
    channel_aswl,
    dpf,
    gmp,
    imp,
    lamp,
    magnitude,
    rigl,
    snip,
)
from aswl.methods import dense as _dense  # noqa: F401
from aswl.methods.aswl import ASWL, ASWLConfig, ASWLPaper, ASWLPaperConfig, project_to_budget
from aswl.methods.base import (
    METHODS,
    ConfigError,
    GradualConfig,
    MethodConfig,
    MethodStateError,
    SparseMethod,
    create_method,
    get_method,
    list_methods,
    register_method,
)
from aswl.methods.registry import method_for

__all__ = [
    "ASWL", "ASWLConfig", "ASWLPaper", "ASWLPaperConfig", "METHODS", "ConfigError",
    "GradualConfig", "MethodConfig", "MethodStateError", "SparseMethod",
    "create_method", "get_method", "list_methods", "method_for", "project_to_budget",
    "register_method",
]
