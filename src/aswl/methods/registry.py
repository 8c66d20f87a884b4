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


STRUCTURES = ("weight", "channel")
CHANNEL_VARIANTS: dict[str, str] = {}
"""Method name -> the registered name of its channel-granularity class (filled by
:mod:`aswl.methods.channel` and :mod:`aswl.methods.channel_aswl`)."""


def structure_of(name: str, structure: str | None = None) -> str:
    """``structure``, or the method's own when None (``channel`` for the channel-only
    baselines, ``weight`` for every other method)."""
    if structure is None:
        return "channel" if CHANNEL_VARIANTS.get(name) == name else "weight"
    return structure


def method_for(name: str, structure: str | None = None) -> type[SparseMethod]:
    """The class of method ``name`` at granularity ``structure`` (``weight``: single weights,
    ``channel``: whole channels, so the export is a thinner dense model; None: the method's
    own, :func:`structure_of`)."""
    structure = structure_of(name, structure)
    if structure not in STRUCTURES:
        raise ConfigError(f"structure = {structure!r} is invalid: expected 'weight' or 'channel'")
    if structure == "channel":
        if name not in CHANNEL_VARIANTS:
            raise ConfigError(f"method {name!r} has no channel mode; with structure = 'channel' "
                              f"use one of {sorted(set(CHANNEL_VARIANTS))}")
        return get_method(CHANNEL_VARIANTS[name])
    if CHANNEL_VARIANTS.get(name) == name:
        raise ConfigError(f"method {name!r} prunes whole channels: set structure = 'channel' "
                          "(it has no weight-level mode)")
    return get_method(name)


def create_method(name: str, model: nn.Module, total_steps: int | None = None,
                  structure: str | None = None, **options: Any) -> SparseMethod:
    """Method ``name`` with its options, prepared on ``model`` (in place): ready to train.

    ``structure='channel'`` removes whole channels (needs ``example_inputs``: a batch the
    model accepts, on which its coupled channels are traced)."""
    return method_for(name, structure)(model, total_steps=total_steps, **options).prepare()
