"""The wheel: package data (embedded MNIST, configs, licences) included; light dependencies;
and (slow) the built wheel in a fresh venv runs the main job and a shipped config from another
folder. That venv sees the test environment's site-packages through a .pth file, so torch and
the other dependencies are not downloaded: pip installs only the wheel (``--no-index``).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
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
            "aswl.create_method, aswl.sparsify; "
            "new = {m.split('.')[0] for m in set(sys.modules) - before}; "
            "print(' '.join(m for m in ('matplotlib', 'PIL', 'tqdm', 'yaml', 'safetensors', "
            "'numpy', 'torchvision', 'timm', 'mlxtend') if m in new))")
    env = {"PYTHONPATH": str(ROOT / "src"), "OMP_NUM_THREADS": "1", "PATH": ""}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True, timeout=120).stdout.strip()
    assert out == ""


FASHION = Path("/usr/share/datasets/fashion-mnist")


def run(*args: str | Path, cwd: Path, env: dict[str, str] | None = None) -> str:
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=env, capture_output=True,
                            text=True, timeout=300)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


@pytest.mark.slow
def test_wheel_in_a_fresh_venv_runs_from_another_folder(tmp_path: Path) -> None:
    import torch

    wheel = build_wheel(tmp_path)
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", "--without-pip", venv, cwd=tmp_path)
    python = venv / "bin" / "python"
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])",
                    cwd=tmp_path).strip())
    here = {Path(torch.__file__).parents[1], Path(sysconfig.get_paths()["purelib"])}
    (site / "test_env.pth").write_text("\n".join(str(p) for p in here) + "\n")
    # only the wheel; --ignore-installed: never touch a copy of aswl in the test environment
    run(sys.executable, "-m", "pip", "--python", python, "install", "-q", "--no-index",
        "--no-deps", "--ignore-installed", wheel, cwd=tmp_path)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["OMP_NUM_THREADS"] = "1"
    aswl = venv / "bin" / "aswl"
    location = run(python, "-c", "import aswl; print(aswl.__file__)", cwd=elsewhere, env=env)
    assert str(site) in location  # the installed wheel, not the checkout
    assert run(aswl, "--version", cwd=elsewhere, env=env).strip().startswith("aswl ")
    assert "fashion_lenet300" in run(aswl, "configs", cwd=elsewhere, env=env)
    # the main job (fewer epochs), from a folder that has no configs/ and no source
    out = run(aswl, "train", "--out", "main", "--set", "epochs=2", "progress=false",
              cwd=elsewhere, env=env)
    report = json.loads(out.strip().splitlines()[-1])
    assert report["dataset"] == "mnist-embedded" and report["test_accuracy"] > 0.5
    assert report["global_sparsity"] == pytest.approx(0.95, abs=1e-3)
    assert (elsewhere / "main" / "model.sparse.safetensors").is_file()
    # a shipped config, by name
    printed = run(aswl, "config", "--config", "fashion_lenet300", cwd=elsewhere, env=env)
    assert "dataset: fashion-mnist" in printed
    if FASHION.is_dir():
        out = run(aswl, "train", "--config", "fashion_lenet300", "--out", "fashion", "--set",
                  "epochs=1", "data.limit_train=512", "data.limit_test=256", "progress=false",
                  cwd=elsewhere, env=env)
        assert json.loads(out.strip().splitlines()[-1])["dataset"] == "fashion-mnist"
