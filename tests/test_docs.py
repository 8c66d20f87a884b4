"""The README and docs point only at files that exist in the repository and ship in the sdist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
LINK = re.compile(r"\]\(([^)#\s]+)(?:#[^)]*)?\)")


def manifest_includes(path: Path) -> bool:
    """Whether MANIFEST.in (or the package itself) puts ``path`` into the sdist."""
    relative = path.relative_to(ROOT).as_posix()
    if relative.startswith("src/aswl/"):
        return True
    for line in (ROOT / "MANIFEST.in").read_text().splitlines():
        parts = line.split()
        if parts[:1] == ["include"] and relative in parts[1:]:
            return True
        if parts[:1] == ["recursive-include"] and relative.startswith(parts[1] + "/") and any(
                path.match(pattern) for pattern in parts[2:]):
            return True
    return False


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: p.name)
def test_links_point_to_shipped_files(doc: Path) -> None:
    text = doc.read_text()
    assert "../shared" not in text and "shared/ASWL" not in text
    for target in LINK.findall(text):
        if "://" in target:
            continue
        path = (doc.parent / target).resolve()
        assert path.exists(), f"{doc.name} links to missing {target}"
        assert ROOT in path.parents, f"{doc.name} links outside the repository: {target}"
        assert manifest_includes(path), f"{doc.name} links to {target}, not in the sdist"


def test_licence_file_is_apache() -> None:
    assert "Apache License" in (ROOT / "LICENSE").read_text()
    assert "Version 2.0" in (ROOT / "LICENSE").read_text()


def test_the_readme_layout_names_every_src_folder_and_top_level_module() -> None:
    """The Layout section keeps step with the tree: every folder under src/aswl (as
    ``src/aswl/NAME/``) and every top-level module (as ``NAME.py``) is named there."""
    root = Path(__file__).parents[1]
    text = (root / "README.md").read_text()
    layout = text[text.index("## Layout"):]
    layout = layout[:layout.index("\n## ", 1)]
    package = root / "src" / "aswl"
    folders = sorted(str(p.relative_to(root)) + "/" for p in package.rglob("*")
                     if p.is_dir() and (p / "__init__.py").exists())
    modules = sorted(p.name for p in package.glob("*.py"))
    missing = [f for f in folders if f not in layout] + [m for m in modules if m not in layout]
    assert not missing, f"README Layout does not name {missing}: add a line for each"
