"""Configuration machinery shared by the run config and the method configs.

One filler (:func:`build_config`: typed dataclass from a dict, nested sections included), one
checker (:func:`check`), one comparison (:func:`config_diff`) with one list of the settings a
run may change when it is resumed (:data:`RESUMABLE_KEYS`). Errors are :class:`ConfigError`
with a one-line message naming the field and what it may be.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any, TypeVar

T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and the allowed values."""


def check(ok: bool, name: str, value: Any, allowed: str, prefix: str = "method.") -> None:
    """Raise a :class:`ConfigError` saying which field is wrong and what it may be.

    ``prefix`` is the section the field lives in (method options by default; ``""`` for the
    top level of the run config).
    """
    if not ok:
        raise ConfigError(f"{prefix}{name} = {value!r} is invalid: expected {allowed}")


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
    if check_type is float and isinstance(value, float):
        return value
    if check_type in (int, str, bool, list, dict):
        if isinstance(value, check_type) and not (check_type is int and isinstance(value, bool)):
            return value
    raise ConfigError(f"{name} = {value!r} has the wrong type: expected "
                      f"{getattr(hint, '__name__', hint)}")


def build_config(config_class: type[T], values: dict[str, Any], prefix: str = "method.") -> T:
    """The one filler: a typed dataclass from a dict, validated.

    Unknown keys and values of the wrong type are errors that name the field (``prefix`` +
    key); a field whose type is itself a dataclass is filled from a nested mapping. The
    result's ``validate()`` runs when it has one.
    """
    names = [f.name for f in dataclasses.fields(config_class)]
    unknown = sorted(set(values) - set(names))
    if unknown:
        if prefix == "method.":
            raise ConfigError(f"unknown method option(s) {unknown} for "
                              f"{config_class.__name__}; valid: {sorted(names)}")
        where = f"in section {prefix.rstrip('.')!r} " if prefix else ""
        raise ConfigError(f"unknown config key(s) {[prefix + k for k in unknown]} {where}"
                          f"; valid keys: {[prefix + n for n in names]}")
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


NEUTRAL_KEYS: frozenset[str] = frozenset({"progress", "device", "checkpoint_every"})
"""Settings that never change a run's result (a finished run with other values is reused)."""
RESUMABLE_KEYS: frozenset[str] = NEUTRAL_KEYS | {
    "lr", "lr_schedule", "lr_milestones", "lr_gamma", "warmup_epochs", "grad_clip", "epochs"}
"""Settings a run may change when it is resumed (e.g. a lower lr after a divergence, more
epochs); any other difference makes ``--resume`` refuse."""


def config_diff(old: dict[str, Any], new: dict[str, Any],
                allowed: frozenset[str] = RESUMABLE_KEYS) -> list[str]:
    """Sorted dotted keys whose values differ between two config dicts, except ``allowed``."""
    changed: list[str] = []
    for key in sorted(set(old) | set(new)):
        if key in allowed:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += [f"{key}.{sub}" for sub in config_diff(a, b, frozenset())]
        elif a != b:
            changed.append(key)
    return changed
