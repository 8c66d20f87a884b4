"""Bounded YAML: the one reader of config text, and short reprs for error messages.

A config is a few kilobytes of plain keys and values, so the reader refuses anything that
costs more than that before it costs it: text over :data:`MAX_BYTES`, aliases (``*name``,
which can expand 381 bytes into gigabytes: the "billion laughs"), more than :data:`MAX_NODES`
values, or nesting deeper than :data:`MAX_DEPTH` (which would otherwise end in a
``RecursionError``). It is PyYAML's safe loader (no objects), and it also reads ``1e6``,
``1E-3`` and ``-2e+5`` as numbers (YAML 1.2 style; YAML 1.1 wants a dot in the mantissa).

:func:`short_repr` cuts a value to a short one-line ``repr`` so that an error message about a
huge value stays short.
"""

from __future__ import annotations

import functools
import re
from typing import Any

MAX_BYTES = 1 << 20
"""Longest config text read (1 MiB; the shipped configs are under 4 KiB)."""
MAX_NODES = 10_000
"""Most values (scalars, lists, mappings) in one document (a config has about a hundred)."""
MAX_DEPTH = 64
"""Deepest nesting of lists and mappings."""


class YamlLimitError(ValueError):
    """The YAML text is over a limit (size, aliases, values, nesting) or holds a key twice;
    the message says which."""


_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]{0,39}")


def key_name(key: Any) -> str:
    """A mapping key as a message names it: ``null`` for a YAML null key (``~``), the repr of
    a name or a number, and for any other text only its length (a file that is not a config,
    such as a password file, is never echoed)."""
    if key is None:
        return "null"
    if isinstance(key, str) and not _NAME.fullmatch(key):
        return f"<a key of {len(key)} characters that is not a name>"
    return short_repr(key, 40)


class _UniqueKeys:
    """A mapping that holds a key twice is refused, naming both lines (YAML keeps the last
    value without a word)."""

    def construct_mapping(self, node: Any, deep: bool = False) -> Any:
        seen: dict[Any, int] = {}
        for key_node, _ in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.construct_object(key_node, deep=True)  # type: ignore[attr-defined]
            line = key_node.start_mark.line + 1
            try:
                first = seen.get(key)
            except TypeError:  # an unhashable key: the constructor says so
                continue
            if first is not None:
                raise YamlLimitError(f"the key {key_name(key)} is given twice (lines {first} "
                                     f"and {line}); keep one")
            seen[key] = line
        return super().construct_mapping(node, deep)  # type: ignore[misc]


def short_repr(value: Any, limit: int = 60) -> str:
    """``repr(value)`` cut to about ``limit`` characters (a huge value never floods a message).

    Containers are summarised without building their full repr."""
    if isinstance(value, (list, tuple, dict, set)) and len(value) > 8:
        kind = type(value).__name__
        inner = short_repr(list(value)[:3] if not isinstance(value, dict)
                           else dict(list(value.items())[:3]), limit)
        return f"<{kind} of {len(value)} items: {inner[:limit]}...>"
    if isinstance(value, str) and len(value) > 4 * limit:
        value = value[:4 * limit]
    text = repr(value)
    if len(text) > limit:
        return text[:limit - 3] + "..."
    return text


@functools.lru_cache(maxsize=1)
def _loader() -> type:
    """The loader class, built on first use (``import aswl`` does not import yaml): libyaml's
    safe loader when PyYAML has it, else PyYAML's, which also checks the limits itself."""
    import yaml
    from yaml.events import AliasEvent

    class Loader(_UniqueKeys, yaml.SafeLoader):
        def __init__(self, stream: str) -> None:
            super().__init__(stream)
            self._depth = 0
            self._nodes = 0

        def compose_node(self, parent: Any, index: Any) -> Any:
            if self.check_event(AliasEvent):
                mark = self.peek_event().start_mark
                raise YamlLimitError(f"YAML aliases (*name) are not accepted (line "
                                     f"{mark.line + 1}); write the value out in full")
            self._nodes += 1
            if self._nodes > MAX_NODES:
                raise YamlLimitError(f"more than {MAX_NODES:,} values; a config is a few "
                                     "keys and values")
            self._depth += 1
            try:
                if self._depth > MAX_DEPTH:
                    mark = self.peek_event().start_mark
                    raise YamlLimitError(f"nested deeper than {MAX_DEPTH} levels (line "
                                         f"{mark.line + 1}, column {mark.column + 1})")
                return super().compose_node(parent, index)
            finally:
                self._depth -= 1

    if hasattr(yaml, "CSafeLoader"):  # libyaml: fast; _prescan has applied the limits
        class Loader(_UniqueKeys, yaml.CSafeLoader):  # type: ignore[no-redef]
            pass

    Loader.yaml_implicit_resolvers = {
        first: list(resolvers)
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()}
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:float",
        re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
        list("-+0123456789"))
    return Loader


def _prescan(text: str) -> None:
    """Walk the YAML events (libyaml's C parser when PyYAML has it) and stop at the first
    limit, before any Python object is built: aliases, too many values, too deep."""
    import yaml

    try:
        _walk(yaml.parse(text, Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader)))
    except yaml.YAMLError as err:
        if "nesting depth" in str(err):  # libyaml's own limit (1,000) came first
            raise YamlLimitError(f"nested deeper than {MAX_DEPTH} levels") from None
        raise


def _walk(events: Any) -> None:
    import yaml

    depth = nodes = 0
    for event in events:
        if isinstance(event, yaml.AliasEvent):
            raise YamlLimitError(f"YAML aliases (*name) are not accepted (line "
                                 f"{event.start_mark.line + 1}); write the value out in full")
        if isinstance(event, (yaml.ScalarEvent, yaml.CollectionStartEvent)):
            nodes += 1
            if nodes > MAX_NODES:
                raise YamlLimitError(f"more than {MAX_NODES:,} values; a config is a few "
                                     "keys and values")
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DEPTH:
                mark = event.start_mark
                raise YamlLimitError(f"nested deeper than {MAX_DEPTH} levels (line "
                                     f"{mark.line + 1}, column {mark.column + 1})")
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1


def yaml_load(text: str) -> Any:
    """Parse YAML ``text`` safely and within the limits above.

    Raises :class:`YamlLimitError` for text over a limit and ``yaml.YAMLError`` for text that
    is not YAML (callers turn both into their own one-line error)."""
    import yaml

    if len(text) > MAX_BYTES:
        raise YamlLimitError(f"{len(text):,} characters, more than the {MAX_BYTES:,} a config "
                             "may hold")
    try:
        _prescan(text)  # fast; the loader below checks the same limits again as it builds
        return yaml.load(text, Loader=_loader())  # noqa: S506 - a SafeLoader subclass
    except YamlLimitError:
        raise
    except (ValueError, OverflowError, RecursionError) as err:  # e.g. a 5,000-digit integer
        raise YamlLimitError(f"a value cannot be read ({one_line(err, 120)})") from None


def one_line(err: BaseException, limit: int = 300) -> str:
    """An exception's message on one line, at most ``limit`` characters. A YAML error is said
    by its problem and line, never with the snippet of text PyYAML quotes."""
    problem, mark = getattr(err, "problem", None), getattr(err, "problem_mark", None)
    if problem is not None:
        context = getattr(err, "context", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark is not None else ""
        text = " ".join(f"{context + ': ' if context else ''}{problem}{where}".split())
    else:
        text = " ".join(str(err).split())
    return text if len(text) <= limit else text[:limit - 3] + "..."
