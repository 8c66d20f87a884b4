"""ASWL ablation: which part of the method does the work, at one target sparsity.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ablation.py \\
        --config fashion_lenet300 --sparsity 0.98 --seeds 0,1,2 --out runs/ablation

Variants (each a set of ``--set`` overrides on the base config; all share epochs, data order,
optimiser and schedule):

* ``aswl``: the default (target mode, loss-aware estimator, masks every 16 steps).
* ``uniform split``: the same machinery with the attentions frozen (attention_lr 0): every
  layer at the same sparsity, i.e. DPF with ASWL's projection.
* ``paper estimator``: target mode, but the attentions learn only through equation 1 (output
  scaling) as in the paper.
* ``masks every step``: mask_interval 1 (the paper's cadence).
* ``eq. 3 decay``: lambda * sum(w_hat^2) on the sparse weights instead of the optimiser's
  decay on the dense weights.
* ``aswl_paper gamma=G``: the published mechanism (no target): the sparsity it reaches.

Finished runs (``report.json``) are reused, so an interrupted ablation continues. Prints a
Markdown table: mean ± std test accuracy, achieved sparsity, per-layer sparsity of seed 0.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from pathlib import Path

from aswl.configs import resolve_config
from aswl.train import load_config, train

VARIANTS: dict[str, list[str]] = {
    "aswl": [],
    "uniform split": ["method.attention_lr=0"],
    "paper estimator": ["method.estimator=paper", "method.scale_output=true"],
    "masks every step": ["method.mask_interval=1"],
    "eq. 3 decay": ["method.weight_decay=2.5e-4"],
}
PAPER_GAMMAS = (0.1, 1.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--sparsity", type=float, default=0.98)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, default=Path("runs/ablation"))
    parser.add_argument("--set", nargs="*", default=[], help="extra base overrides")
    parser.add_argument("--no-train", action="store_true",
                        help="train nothing: the table of the runs finished so far")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    seeds = [int(s) for s in args.seeds.split(",")]
    runs: dict[str, list[str]] = {
        name: ["method.name=aswl", f"method.target_sparsity={args.sparsity}", *extra]
        for name, extra in VARIANTS.items()}
    for gamma in PAPER_GAMMAS:
        runs[f"aswl_paper gamma={gamma}"] = ["method=aswl_paper", f"method.gamma={gamma}"]
    rows = []
    for name, overrides in runs.items():
        reports = []
        for seed in seeds:
            out = args.out / f"{name.replace(' ', '_').replace('=', '')}-seed{seed}"
            if not (out / "report.json").is_file():
                if args.no_train:
                    continue
                config = load_config(resolve_config(args.config), ["progress=false", f"seed={seed}",
                                                   *args.set, *overrides])
                train(config, out)
            reports.append(json.loads((out / "report.json").read_text()))
        if not reports:
            continue
        accuracy = [100 * r["test_accuracy"] for r in reports]
        sparsity = [100 * r["global_sparsity"] for r in reports]
        spread = statistics.stdev(accuracy) if len(accuracy) > 1 else 0.0
        layers = " / ".join(f"{100 * layer['sparsity']:.1f}" for layer in reports[0]["layers"])
        rows.append(f"| {name} | {statistics.mean(accuracy):.2f} ± {spread:.2f} | "
                    f"{len(reports)} | {statistics.mean(sparsity):.2f} | {layers} |")
    print(f"\nTarget {args.sparsity:.0%}, seeds {args.seeds}, config {args.config}\n")
    print("| variant | test accuracy (%) | seeds | global sparsity (%) | "
          "per-layer sparsity, first seed (%) |")
    print("|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
