"""ASWL ablation: what each part of the method adds, at one target sparsity.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/ablation.py \\
        --config fashion_lenet300 --sparsity 0.98 --seeds 0,1,2 --out runs/ablation

Each variant changes one thing from the default ``aswl`` (target variant: no per-layer cap and
one weight per output unit at least, masks every step from a sampled threshold, attentions
about 512 times over the ramp from the first-order estimator accumulated in between, as a
correction to LAMP's split (``prior: lamp``), masks and attentions frozen at the end of the
ramp, the optimiser's decay on the dense weights). All share epochs, data order, optimiser
and schedule. ``--variants`` picks some by name (comma list); the paper variant's rows are
``aswl_paper gamma=G``. The variants of options removed since (no accumulation, second-order
saliency, the ERK prior, the paper estimator in the target variant) and their numbers are in
docs/history/removed_options.md.

The variants are a grid of ``aswl compare`` (``--variants 'aswl:prior=uniform'``: the
default, each variant's options, one target, the seeds) in ``OUT/runs/``, so compare's run
reuse applies: finished runs are reused, an interrupted one resumes, a finished run made with
other settings is reported stale. Prints a Markdown table: mean ± std test accuracy, what
finalize() cost (accuracy before it minus after), the achieved sparsity and the per-layer
sparsity of the first seed.
"""

from __future__ import annotations

import argparse
import json
import logging
import statistics
from pathlib import Path

from aswl.compare import load_grid, run_grid
from aswl.config import load_config
from aswl.configs import resolve_config

VARIANTS: dict[str, list[str]] = {
    "aswl (default)": [],
    "LAMP's split with fixed attentions (attention_lr 0)": ["method.attention_lr=0"],
    "uniform start (no LAMP prior; the third round's default)": ["method.prior=uniform"],
    "uniform split (uniform start, attention_lr 0)": ["method.prior=uniform",
                                                      "method.attention_lr=0"],
    "0.99 cap, one weight per layer (the paper's floor)": ["method.max_ratio=0.99",
                                                            "method.min_kept=1"],
    "attentions every 16 steps (the old cadence)": ["method.attention_interval=16"],
    "no freeze (masks move to the end; finalize recomputes them)": [
        "method.freeze_after_ramp=false"],
    "exact top-k masks every step": ["method.exact_masks=true"],
    "masks every 16 steps": ["method.mask_interval=16"],
    "eq. 3 decay (on the sparse weights)": ["method.weight_decay=2.5e-4"],
}
PAPER_GAMMAS = (0.1, 1.0)


def variant_token(method: str, overrides: list[str]) -> str:
    """``aswl`` + ``["method.prior=uniform"]`` -> ``aswl:prior=uniform`` (a compare variant)."""
    options = [item.removeprefix("method.") for item in overrides]
    return f"{method}:{'+'.join(options)}" if options else method


def all_variants() -> dict[str, str]:
    """Row name -> the compare token that trains it."""
    runs = {name: variant_token("aswl", extra) for name, extra in VARIANTS.items()}
    for gamma in PAPER_GAMMAS:
        runs[f"aswl_paper gamma={gamma}"] = variant_token("aswl_paper", [f"gamma={gamma}"])
    return runs


def table(rows: list[dict], names: dict[str, str], out: Path) -> list[str]:
    """One Markdown row per variant with finished runs, from their reports."""
    lines = []
    for name, token in names.items():
        reports = [json.loads((out / "runs" / row["run"] / "report.json").read_text())
                   for row in rows if row["method"] == token and row["status"] == "ok"]
        if not reports:
            continue
        accuracy = [100 * r["test_accuracy"] for r in reports]
        gap = [100 * (r.get("test_accuracy_before_finalize", r["test_accuracy"])
                      - r["test_accuracy"]) for r in reports]
        sparsity = [100 * r["global_sparsity"] for r in reports]
        spread = f"{statistics.stdev(accuracy):.2f}" if len(accuracy) > 1 else "n = 1"
        layers = " / ".join(f"{100 * layer['sparsity']:.1f}" for layer in reports[0]["layers"])
        lines.append(f"| {name} | {statistics.mean(accuracy):.2f} ± {spread} | "
                     f"{statistics.mean(gap):+.2f} | {len(reports)} | "
                     f"{statistics.mean(sparsity):.2f} | {layers} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--sparsity", type=float, default=0.98)
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--out", type=Path, default=Path("runs/ablation"))
    parser.add_argument("--set", nargs="*", default=[], help="extra base overrides")
    parser.add_argument("--variants", help="comma list of variant names (default: all)")
    parser.add_argument("--no-train", action="store_true",
                        help="train nothing: the table of the runs finished so far")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    names = all_variants()
    if args.variants:
        wanted = [v.strip() for v in args.variants.split(",") if v.strip()]
        unknown = [v for v in wanted if not any(n.startswith(v) for n in names)]
        if unknown:
            parser.error(f"unknown variant(s) {unknown}; known: {sorted(names)}")
        names = {n: t for n, t in names.items() if any(n.startswith(v) for v in wanted)}
    base = load_config(resolve_config(args.config), ["progress=false", *args.set])
    tokens = list(names.values())
    grid = load_grid(methods=",".join(t for t in tokens if ":" not in t),
                     variants=[t for t in tokens if ":" in t],
                     sparsities=str(args.sparsity), seeds=args.seeds)
    rows = run_grid(base, grid, args.out, train_missing=not args.no_train)
    print(f"\nTarget {args.sparsity:.1%}, seeds {args.seeds}, config {args.config}\n")
    print("| variant | test accuracy (%) | finalize cost (points) | seeds | "
          "global sparsity (%) | per-layer sparsity, first seed (%) |")
    print("|---|---|---|---|---|---|")
    print("\n".join(table(rows, names, args.out)))


if __name__ == "__main__":
    main()
