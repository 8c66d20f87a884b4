"""What installing aswl costs on top of torch: packages, disk, and import time.

    python benchmarks/install_footprint.py [--torch torch==2.13.0] [--repeats 15]

Creates a fresh venv (no system site-packages) in a temporary folder, installs torch, then the
wheel built from this checkout (and then its ``plot`` extra), and prints the packages each step
adds with their size on disk. Then times ``python -c "import torch"`` against
``python -c "import aswl"`` (which imports torch), interleaved, median of ``--repeats`` runs.
Needs the torch wheel from a local index or the network; takes about two minutes.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).parents[1]


def run(*args: str | Path, cwd: Path | None = None) -> str:
    return subprocess.run([str(a) for a in args], check=True, capture_output=True, text=True,
                          cwd=cwd).stdout


def installed(python: Path) -> dict[str, str]:
    lines = run(python, "-m", "pip", "list", "--format=freeze").splitlines()
    return dict(line.split("==", 1) for line in lines if "==" in line)


def site_size_mb(python: Path) -> float:
    site = Path(run(python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])")
                .strip())
    total = sum(p.stat().st_size for p in site.rglob("*") if p.is_file() and not p.is_symlink())
    return total / 2**20


def step(python: Path, label: str, *pip_args: str) -> None:
    before, size_before = installed(python), site_size_mb(python)
    run(python, "-m", "pip", "install", "-q", *pip_args)
    after, size_after = installed(python), site_size_mb(python)
    added = sorted(set(after) - set(before), key=str.lower)
    print(f"{label}: +{len(added)} packages, +{size_after - size_before:.1f} MB")
    print("    " + ", ".join(f"{name} {after[name]}" for name in added))


TIMER = """
import time
t0, c0 = time.perf_counter(), time.process_time()
import torch
t1, c1 = time.perf_counter(), time.process_time()
import aswl, aswl.cli
aswl.create_method, aswl.sparsify  # the public names load lazily: count their modules too
t2, c2 = time.perf_counter(), time.process_time()
print(t1 - t0, t2 - t1, c1 - c0, c2 - c1)
"""


def import_seconds(python: Path) -> list[float]:
    """Wall and CPU seconds of ``import torch``, then of ``import aswl, aswl.cli`` after it,
    in one fresh interpreter: [wall torch, wall aswl, cpu torch, cpu aswl]."""
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("PYTHONPATH", None)
    out = subprocess.run([str(python), "-c", TIMER], check=True, env=env, capture_output=True,
                         text=True, cwd=tempfile.gettempdir()).stdout.split()
    return [float(value) for value in out]


def time_imports(python: Path, repeats: int) -> None:
    import_seconds(python)  # warm the file caches and write the .pyc files once
    runs = [import_seconds(python) for _ in range(repeats)]
    wall_torch, wall_aswl, cpu_torch, cpu_aswl = (statistics.median(r[i] for r in runs)
                                                  for i in range(4))
    print(f"import time, median of {repeats} fresh interpreters (wall / CPU seconds): "
          f"import torch {wall_torch:.3f} / {cpu_torch:.3f}; then import aswl (+ aswl.cli, "
          f"aswl.create_method, aswl.sparsify) "
          f"{wall_aswl:.3f} / {cpu_aswl:.3f} more; load average {os.getloadavg()[0]:.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--torch", default="torch==2.13.0", help="torch requirement to start from")
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--python", type=Path,
                        help="only time the imports with this interpreter (aswl installed)")
    args = parser.parse_args()
    if args.python:
        time_imports(args.python.absolute(), args.repeats)
        return
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        run(sys.executable, "-m", "venv", tmp_path / "venv")
        python = tmp_path / "venv" / "bin" / "python"
        source = tmp_path / "source"  # build from a copy: the checkout stays clean
        shutil.copytree(ROOT / "src", source / "src",
                        ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
        for name in ("pyproject.toml", "README.md", "LICENSE", "MANIFEST.in"):
            shutil.copy(ROOT / name, source / name)
        run(sys.executable, "-c", "import sys; from setuptools import build_meta as b; "
            "b.build_wheel(sys.argv[1])", tmp_path, cwd=source)
        wheel = next(tmp_path.glob("aswl-*.whl"))
        print(f"python {sys.version.split()[0]}, fresh venv, pip "
              f"{run(python, '-m', 'pip', '--version').split()[1]}")
        step(python, args.torch, args.torch)
        step(python, f"aswl ({wheel.name}) on top", str(wheel))
        step(python, "aswl[plot] on top of that", f"aswl[plot] @ {wheel.as_uri()}")
        time_imports(python, args.repeats)

if __name__ == "__main__":
    main()
