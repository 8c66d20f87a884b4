"""ASWL and the baselines, each registered by name on one shared base."""

from aswl.methods import aswl as _aswl  # noqa: F401  (registers)
from aswl.methods import dense as _dense  # noqa: F401
from aswl.methods import dpf, gmp, imp, lamp, magnitude, rigl, snip  # noqa: F401  (baselines)
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

__all__ = [
    "ASWL", "ASWLConfig", "ASWLPaper", "ASWLPaperConfig", "METHODS", "ConfigError",
    "GradualConfig", "MethodConfig", "MethodStateError", "SparseMethod",
    "create_method", "get_method", "list_methods", "project_to_budget", "register_method",
]
