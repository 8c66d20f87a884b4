"""The method registry: a method is available once its class is registered with
``@register_method(name, structure=...)``, keyed by its name and its granularity.

``structure='weight'`` (single weights, the default) or ``'channel'`` (whole channels, so the
export is a thinner dense model). One name may have a class at each granularity (``aswl``
has both); :func:`method_for` resolves a name and a structure to the class, and a name
registered at one granularity only is that method's own structure (:func:`structure_of`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from torch import nn

from aswl.checks import ConfigError

if TYPE_CHECKING:
    from aswl.methods.base import SparseMethod

STRUCTURES = ("weight", "channel")

METHODS: dict[tuple[str, str], type[SparseMethod]] = {}
"""Every registered method class by (name, structure); aliases included."""
ALIASES: set[tuple[str, str]] = set()
"""The keys of :data:`METHODS` that are other names of a class (not listed)."""


def register_method(name: str, structure: str = "weight", aliases: tuple[str, ...] = ()
                    ) -> Callable[[type[SparseMethod]], type[SparseMethod]]:
    """Class decorator: make a method available as ``name`` at granularity ``structure``
    (``weight`` or ``channel``); ``aliases``: other names it is found by (older configs)."""
    if structure not in STRUCTURES:
        raise ValueError(f"structure = {structure!r} is invalid: expected one of {STRUCTURES}")

    def wrap(cls: type[SparseMethod]) -> type[SparseMethod]:
        keys = [(each, structure) for each in (name, *aliases)]
        taken = [key for key in keys if key in METHODS]
        if taken:
            raise ValueError(f"method {taken[0][0]!r} registered twice at structure "
                             f"{structure!r}: choose another name")
        cls.name = name
        cls.structure = structure
        cls.aliases = tuple(aliases)
        for key in keys:
            METHODS[key] = cls
        ALIASES.update(keys[1:])
        return cls

    return wrap


def list_methods(structure: str | None = None) -> list[str]:
    """The registered names (at ``structure``; None: at either), aliases left out."""
    return sorted({name for name, kind in METHODS if (name, kind) not in ALIASES
                   and (structure is None or kind == structure)})


def structure_of(name: str, structure: str | None = None) -> str:
    """``structure``, or the method's own when None: ``weight`` when the name has a weight
    class, else ``channel`` (the channel-only baselines)."""
    if structure is not None:
        return structure
    return "channel" if (name, "channel") in METHODS and (name, "weight") not in METHODS \
        else "weight"


def method_for(name: str, structure: str | None = None) -> type[SparseMethod]:
    """The class of method ``name`` at granularity ``structure`` (``weight``: single weights,
    ``channel``: whole channels, so the export is a thinner dense model; None: the method's
    own, :func:`structure_of`)."""
    structure = structure_of(name, structure)
    if structure not in STRUCTURES:
        raise ConfigError(f"structure = {structure!r} is invalid: expected 'weight' or 'channel'")
    if (name, structure) in METHODS:
        return METHODS[name, structure]
    if not any(name == known for known, _ in METHODS):
        raise ConfigError(f"unknown method {name!r}; available: {', '.join(list_methods())}")
    if structure == "channel":
        raise ConfigError(f"method {name!r} has no channel mode; with structure = 'channel' "
                          f"use one of {list_methods('channel')}")
    raise ConfigError(f"method {name!r} prunes whole channels: set structure = 'channel' "
                      "(it has no weight-level mode)")


def get_method(name: str) -> type[SparseMethod]:
    """The class of method ``name`` at its own structure (:func:`method_for`)."""
    return method_for(name)


def create_method(name: str, model: nn.Module, total_steps: int | None = None,
                  structure: str | None = None, **options: Any) -> SparseMethod:
    """Method ``name`` with its options, prepared on ``model`` (in place): ready to train.

    ``structure='channel'`` removes whole channels (needs ``example_inputs``: a batch the
    model accepts, on which its coupled channels are traced)."""
    return method_for(name, structure)(model, total_steps=total_steps, **options).prepare()
