"""The paper's experiments as YAML configs, shipped inside the package.

``aswl train --config NAME`` takes a shipped name (``fashion_lenet300``) or a path to a YAML
file. Each file starts with a comment header: a title line, then a ``Reference point:``
paragraph naming the published result it compares with, then the commands that run it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from aswl.checks import ConfigError

logger = logging.getLogger(__name__)

CONFIG_DIR = Path(__file__).parent


@dataclass(frozen=True)
class ShippedConfig:
    """One shipped config: its name, path, one-line title and reference point."""

    name: str
    path: Path
    title: str
    reference: str


def _header(path: Path) -> list[str]:
    lines = []
    for line in path.read_text().splitlines():
        if not line.startswith("#"):
            break
        lines.append(line[1:].strip())
    return lines


def _paragraphs(lines: list[str]) -> list[str]:
    """The header's paragraphs (separated by empty comment lines), each joined into one line."""
    paragraphs: list[list[str]] = [[]]
    for line in lines:
        if line:
            paragraphs[-1].append(line)
        elif paragraphs[-1]:
            paragraphs.append([])
    return [" ".join(p) for p in paragraphs if p]


def describe(path: Path) -> ShippedConfig:
    """Read a config file's title and reference point(s) from its comment header."""
    paragraphs = _paragraphs(_header(path))
    title = paragraphs[0] if paragraphs else ""
    reference = next((p for p in paragraphs if p.startswith("Reference point")), "")
    reference = re.sub(r"^Reference points?:?\s*", "", reference)
    return ShippedConfig(path.stem, path, title, reference)


def list_configs() -> list[ShippedConfig]:
    """Every shipped config, sorted by name."""
    return [describe(p) for p in sorted(CONFIG_DIR.glob("*.yaml"))]


def config_names() -> list[str]:
    """The names ``--config`` accepts besides file paths."""
    return [p.stem for p in sorted(CONFIG_DIR.glob("*.yaml"))]


def resolve_config(name_or_path: str | Path | None) -> Path | None:
    """A YAML path for ``--config``: an existing file as given, else a shipped config by name.

    ``configs/NAME.yaml`` (the path inside a source checkout of older versions) also finds the
    shipped ``NAME``. Raises ConfigError naming the shipped configs when neither exists.
    """
    if name_or_path is None:
        return None
    path = Path(name_or_path)
    if path.is_file():
        return path
    stem = path.name.removesuffix(".yaml").removesuffix(".yml")
    shipped = CONFIG_DIR / f"{stem}.yaml"
    if shipped.is_file() and (path.parent == Path(".") or path.parent.name == "configs"):
        if path.parent != Path(".") or path.suffix:
            logger.info("%s not found; using the shipped config %s", path, stem)
        return shipped
    raise ConfigError(
        f"config {str(name_or_path)!r} is neither a file nor a shipped config; shipped: "
        f"{', '.join(config_names())} (`aswl configs` lists them)"
    )


def _first_sentence(text: str) -> str:
    """A field doc's first sentence (a sentence ends at a period before a capital letter, so
    "eq. 6" and "e.g. x" do not end it), plus its "None: ..." sentence saying what null means."""
    sentences = [part if part.endswith(".") else part + "."
                 for part in re.split(r"(?<=[a-z0-9)`])\. (?=[A-Z`*])", text)]
    null = next((part for part in sentences[1:] if part.startswith("None")), None)
    return sentences[0] + (" null" + null[4:] if null else "")


def field_docs(cls: type) -> dict[str, str]:
    """First sentence of each dataclass field's docstring (the string literal after the field)
    and what null means, through the class hierarchy, base classes first."""
    import ast
    import inspect
    import textwrap

    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError, SyntaxError):
            continue
        body = tree.body[0].body if tree.body and isinstance(tree.body[0], ast.ClassDef) else []
        for field_node, after in zip(body, body[1:]):
            if (isinstance(field_node, ast.AnnAssign) and isinstance(field_node.target, ast.Name)
                    and isinstance(after, ast.Expr) and isinstance(after.value, ast.Constant)
                    and isinstance(after.value.value, str)):
                text = " ".join(after.value.value.split()).replace("``", "`")
                docs[field_node.target.id] = _first_sentence(text)
    return docs


def _format_value(value: object) -> str:
    import yaml

    return yaml.safe_dump(value, default_flow_style=True, width=1000).strip().removesuffix(
        "\n...").removesuffix("...").strip()


def describe_config(config: object) -> str:
    """The resolved run config as YAML, every key with its one-line doc as a comment.

    The ``method`` section lists every option of the chosen method with its value."""
    import dataclasses

    from aswl.config import Config

    assert isinstance(config, Config)
    lines: list[str] = []

    def emit(key: str, value: object, doc: str, indent: int) -> None:
        text = f"{'  ' * indent}{key}: {_format_value(value)}"
        lines.append(f"{text:<44} # {doc}" if doc else text)

    def section(obj: object, indent: int) -> None:
        docs = field_docs(type(obj))
        for item in dataclasses.fields(obj):  # type: ignore[arg-type]
            value = getattr(obj, item.name)
            if item.name == "method":
                method = config.method_config()
                lines.append(f"{'method:':<44} # {docs.get('method', '')}")
                emit("name", config.method_name(), "the method (`aswl methods` lists them)",
                     indent + 1)
                section(method, indent + 1)
            elif dataclasses.is_dataclass(value):
                lines.append(f"{'  ' * indent + item.name + ':':<44} # {docs.get(item.name, '')}")
                section(value, indent + 1)
            else:
                emit(item.name, value, docs.get(item.name, ""), indent)

    section(config, 0)
    return "\n".join(lines)
