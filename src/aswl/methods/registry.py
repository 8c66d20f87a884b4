"""The method registry: a method is available by name once its class is registered."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from torch import nn

from aswl.checks import ConfigError

if TYPE_CHECKING:
    from aswl.methods.base import SparseMethod

METHODS: dict[str, type[SparseMethod]] = {}
"""Every registered method class by name."""


def register_method(name: str) -> Callable[[type[SparseMethod]], type[SparseMethod]]:
    """Class decorator: make a method available by ``name``."""

    def wrap(cls: type[SparseMethod]) -> type[SparseMethod]:
        if name in METHODS:
            raise ValueError(f"method {name!r} registered twice")
        cls.name = name
        METHODS[name] = cls
        return cls

    return wrap


def list_methods() -> list[str]:
    return sorted(METHODS)


def get_method(name: str) -> type[SparseMethod]:
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; available: {', '.join(list_methods())}")
    return METHODS[name]


def create_method(name: str, model: nn.Module, total_steps: int | None = None,
                  **options: Any) -> SparseMethod:
    """Method ``name`` with its options, prepared on ``model`` (in place): ready to train."""
    return get_method(name)(model, total_steps=total_steps, **options).prepare()
