"""Tables and plots of every finished run under a compare folder, whatever command made it.

    .venv/bin/python benchmarks/grid_table.py runs/cmp_lenet300 --title "LeNet-300-100"

``aswl compare --report-only`` checks each run against the command's own settings, so runs
made by several compare commands into one folder (e.g. the magnitude family with
``--set method.mask_interval=10`` and the others without) are reported by none of them in
full. This reads each ``runs/<method>-<sparsity>-seed<S>/report.json`` as it is and writes the
same ``summary.md``, ``summary.csv``, ``results.csv`` and plots as ``aswl compare``; the
method options each run used are in its own ``config.yaml``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from aswl.compare import Grid, write_outputs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", type=Path, help="a compare output folder (with runs/)")
    parser.add_argument("--title", default="")
    parser.add_argument("--layer-plot-sparsity", type=float, default=None)
    args = parser.parse_args()
    rows = []
    for report_path in sorted(args.folder.glob("runs/*/report.json")):
        report = json.loads(report_path.read_text())
        name = report_path.parent.name
        target = report.get("target_sparsity") if report["method"] != "dense" else None
        rows.append({"run": name, "method": report["method"], "target_sparsity": target,
                     "seed": report["seed"], "status": "ok",
                     "test_accuracy": report.get("test_accuracy"),
                     "global_sparsity": report.get("global_sparsity"),
                     "train_seconds": report.get("train_seconds"),
                     "epochs": report.get("epochs"), "error": "",
                     "layers": report.get("layers")})
    if not rows:
        parser.error(f"no finished run (runs/*/report.json) under {args.folder}")
    methods = list(dict.fromkeys(row["method"] for row in rows))
    sparsities = sorted({row["target_sparsity"] for row in rows
                         if row["target_sparsity"] is not None})
    seeds = sorted({row["seed"] for row in rows})
    grid = Grid(methods=methods, sparsities=sparsities, seeds=seeds,
                layer_plot_sparsity=args.layer_plot_sparsity)
    write_outputs(rows, args.folder, grid, args.title)
    print((args.folder / "summary.md").read_text())


if __name__ == "__main__":
    main()
