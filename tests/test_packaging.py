"""The wheel: package data (embedded MNIST, configs, licences) included; light dependencies."""

from __future__ import annotations

import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


def build_wheel(dest: Path) -> Path:
    """Build the wheel from a copy of the sources (the checkout stays clean)."""
    source = dest / "source"
    shutil.copytree(ROOT / "src", source / "src",
                    ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    for name in ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"):
        shutil.copy(ROOT / name, source / name)
    code = ("import sys; from setuptools import build_meta as b; "
            "print(b.build_wheel(sys.argv[1]))")
    subprocess.run([sys.executable, "-c", code, str(dest)], cwd=source, check=True,
                   capture_output=True, timeout=120)
    (wheel,) = dest.glob("aswl-*.whl")
    return wheel


@pytest.fixture(scope="module")
def wheel(tmp_path_factory: pytest.TempPathFactory) -> Path:
    pytest.importorskip("setuptools")
    return build_wheel(tmp_path_factory.mktemp("wheel"))


def test_wheel_holds_the_package_data(wheel: Path) -> None:
    names = set(zipfile.ZipFile(wheel).namelist())
    assert "aswl/data/assets/mnist_5k.npz" in names
    assert "aswl/data/assets/README.md" in names
    shipped = {p.name for p in (ROOT / "src/aswl/configs").glob("*.yaml")}
    assert shipped and {f"aswl/configs/{n}" for n in shipped} <= names
    assert any(n.endswith("licenses/LICENSE") for n in names)


def test_wheel_metadata_is_light(wheel: Path) -> None:
    with zipfile.ZipFile(wheel) as archive:
        meta = next(archive.read(n).decode() for n in archive.namelist()
                    if n.endswith(".dist-info/METADATA"))
    required = [line.split(":", 1)[1].strip() for line in meta.splitlines()
                if line.startswith("Requires-Dist:") and "extra ==" not in line]
    names = {r.split(">")[0].split("<")[0].split("=")[0].split(";")[0].strip() for r in required}
    assert names == {"torch", "numpy", "pyyaml", "safetensors", "tqdm"}
    torch_spec = next(r for r in required if r.startswith("torch"))
    assert "<" not in torch_spec  # never downgrades a user's newer torch
    assert "mlxtend" not in meta


def test_import_aswl_loads_no_optional_or_heavy_module() -> None:
    """What ``import aswl`` loads beyond what ``import torch`` loads (torch.hub loads tqdm)."""
    code = ("import sys, torch; before = set(sys.modules); import aswl, aswl.cli; "
            "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
            "print(' '.join(m for m in ('matplotlib', 'PIL', 'tqdm', 'yaml', 'safetensors', "
            "'numpy', 'torchvision', 'timm', 'mlxtend') if m in new))")
    env = {"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "PATH": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True, timeout=120).stdout.strip()
    assert out == ""
