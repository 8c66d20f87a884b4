"""The config checkers every typed config shares: one filler (:func:`build_config`: a typed
dataclass from a dict, nested sections included), one checker (:func:`check`) and the error
they raise (:class:`ConfigError`, a one-line message naming the field and what it may be).

This module imports only :mod:`aswl.safe_yaml` (a leaf), so that the run config
(:mod:`aswl.config`) and the methods' configs (:mod:`aswl.methods.base`) both build on it
without importing each other.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from typing import Any, TypeVar

from aswl.safe_yaml import key_name, short_repr

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and the allowed values."""


def check(ok: bool, name: str, value: Any, allowed: str, prefix: str = "method.") -> None:
    """Raise a :class:`ConfigError` saying which field is wrong and what it may be.

    ``prefix`` is the section the field lives in (method options by default; ``""`` for the
    top level of the run config).
    """
    if not ok:
        raise ConfigError(f"{prefix}{name} = {short_repr(value)} is invalid: expected {allowed}")


def coerce_value(value: Any, hint: Any, name: str) -> Any:
    """Check ``value`` against a field's type hint, converting int to float where asked."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce_value(value, option, name)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is Any:
        return value
    check_type = origin or hint
    if check_type in (int, float) and isinstance(value, float) and not math.isfinite(value):
        raise ConfigError(f"{name} = {short_repr(value)} is invalid: expected a finite number")
    if check_type is float and isinstance(value, float):
        return value
    if check_type is int and isinstance(value, float) and value.is_integer():
        return int(value)  # 1e3 -> 1000
    if check_type is list and isinstance(value, list) and typing.get_args(hint):
        item_hint = typing.get_args(hint)[0]  # list[str]: every element is checked
        return [coerce_value(item, item_hint, f"{name}[{i}]") for i, item in enumerate(value)]
    if check_type in (int, str, bool, list, dict):
        if isinstance(value, check_type) and not (check_type is int and isinstance(value, bool)):
            return value
    raise ConfigError(f"{name} = {short_repr(value)} has the wrong type: expected "
                      f"{getattr(hint, '__name__', hint)}")


def check_finite(config: Any, prefix: str = "method.") -> None:
    """Every float field of a config dataclass is a finite number (no inf, no nan)."""
    for item in dataclasses.fields(config):
        value = getattr(config, item.name)
        if isinstance(value, float) and not math.isfinite(value):
            check(False, item.name, value, "a finite number", prefix)


def key_list(keys: list[Any], prefix: str = "") -> str:
    """Keys as a message lists them (at most five): ``'lr', null, ...``
    (:func:`aswl.safe_yaml.key_name`: text that is not a name is never echoed)."""
    shown = [key_name(f"{prefix}{key}" if isinstance(key, str) else key) for key in keys[:5]]
    return ", ".join(shown + (["..."] if len(keys) > 5 else []))


def build_config(config_class: type[T], values: dict[str, Any], prefix: str = "method.") -> T:
    """The one filler: a typed dataclass from a dict, validated.

    Unknown keys and values of the wrong type are errors that name the field (``prefix`` +
    key); a field whose type is itself a dataclass is filled from a nested mapping. The
    result's ``validate()`` runs when it has one.
    """
    names = [f.name for f in dataclasses.fields(config_class)]
    unknown = sorted(set(values) - set(names), key=str)
    if unknown:
        close = [f"`{prefix}{match[0]}`" for key in unknown[:5] if isinstance(key, str)
                 and (match := difflib.get_close_matches(key, names, n=1))]
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        if prefix == "method.":
            raise ConfigError(f"unknown method option(s) {key_list(unknown)}{hint} for "
                              f"{config_class.__name__}; valid: {sorted(names)}")
        where = f"in section {prefix.rstrip('.')!r} " if prefix else ""
        raise ConfigError(f"unknown config key(s) {key_list(unknown, prefix)}{hint} "
                          f"{where}".rstrip() + f"; valid keys: {[prefix + n for n in names]}")
    hints = typing.get_type_hints(config_class)
    kwargs = {}
    for key, value in values.items():
        hint = hints[key]
        if dataclasses.is_dataclass(hint):
            if not isinstance(value, dict):
                raise ConfigError(f"{prefix}{key} must be a mapping of its own keys")
            kwargs[key] = build_config(hint, value, f"{prefix}{key}.")
        else:
            kwargs[key] = coerce_value(value, hint, prefix + key)
    config = config_class(**kwargs)
    if hasattr(config, "validate"):
        config.validate()
    return config
