"""Per-layer sparsity at one target: ASWL's learned split against global magnitude pruning,
LAMP (both from finished ``aswl compare`` runs) and the closed-form ERK rule.

    .venv/bin/python benchmarks/layer_split.py --runs runs/cmp_lenet300/runs --sparsity 0.98 \\
        --out docs/img/split_lenet300.png

Reads ``<runs>/<method>-<sparsity>-seed<S>/report.json`` for every seed found and averages
the per-layer sparsity over seeds. ``--runs`` takes several folders (e.g. the baselines' grid
and a later grid of ``aswl`` alone); ``FOLDER=LABEL`` names that folder's ``aswl`` bars. ERK
comes from the layer shapes (no training: the model is built from the first folder's
config.yaml). Prints a Markdown table (one row per layer) and draws grouped bars.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from aswl.config import load_config
from aswl.models import create_model
from aswl.sparse.allocation import erk_densities

METHODS = ("aswl", "gmp_global", "lamp")


def sparsity_label(value: float) -> str:
    return f"{value:g}"


def load(runs: Path, method: str, sparsity: float) -> list[dict]:
    reports = []
    for path in sorted(runs.glob(f"{method}-{sparsity_label(sparsity)}-seed*/report.json")):
        reports.append(json.loads(path.read_text()))
    return reports


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", nargs="+", required=True,
                        help="compare folders' runs/ (FOLDER or FOLDER=LABEL for its aswl runs)")
    parser.add_argument("--sparsity", type=float, default=0.98)
    parser.add_argument("--out", type=Path, help="PNG to draw (needs matplotlib)")
    parser.add_argument("--title", default="")
    parser.add_argument("--input-shape", type=int, nargs=3, default=[1, 28, 28],
                        help="the model's input (C H W) for its layer shapes")
    args = parser.parse_args()
    splits: dict[str, dict[str, float]] = {}
    layers: list[dict] = []
    folders = [(Path(spec.partition("=")[0]), spec.partition("=")[2]) for spec in args.runs]
    for folder, label in folders:
        for method in METHODS:
            reports = load(folder, method, args.sparsity)
            if not reports:
                continue
            layers = reports[0]["layers"]
            name = label if (label and method == "aswl") else method
            splits[f"{name} (n={len(reports)})"] = {
                layer["name"]: statistics.mean(
                    next(x["sparsity"] for x in r["layers"] if x["name"] == layer["name"])
                    for r in reports)
                for layer in layers}
    if not layers:
        parser.error(f"no finished run at {args.sparsity} under {args.runs}")
    config = load_config(next(folders[0][0].glob("*/config.yaml")))
    model = create_model(config.model, 10, tuple(args.input_shape), **config.model_args)
    shapes = {layer["name"]: tuple(model.get_submodule(layer["name"]).weight.shape)
              for layer in layers}
    erk = erk_densities(shapes, 1.0 - args.sparsity)
    splits["ERK"] = {name: 1.0 - density for name, density in erk.items()}
    names = [layer["name"] for layer in layers]
    print("| layer | weights | " + " | ".join(splits) + " |")
    print("|---|---:|" + "---:|" * len(splits))
    for layer in layers:
        cells = " | ".join(f"{100 * split[layer['name']]:.1f}" for split in splits.values())
        print(f"| {layer['name']} | {layer['numel']:,} | {cells} |")
    if args.out:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, ax = plt.subplots(figsize=(min(16.0, max(6.0, 0.25 * len(names) * len(splits))), 4.2))
        width = 0.8 / len(splits)
        for i, (label, split) in enumerate(splits.items()):
            ax.bar([j + (i - (len(splits) - 1) / 2) * width for j in range(len(names))],
                   [100 * split[name] for name in names], width, label=label)
        ax.axhline(100 * args.sparsity, color="black", linestyle=":", linewidth=1,
                   label="global target")
        ax.set_xticks(range(len(names)), names, rotation=60 if len(names) > 6 else 0,
                      ha="right" if len(names) > 6 else "center", fontsize=7)
        ax.set_ylabel("layer sparsity (%)")
        ax.set_ylim(0, 100)
        ax.set_title(f"{args.title + ': ' if args.title else ''}per-layer sparsity at "
                     f"{100 * args.sparsity:g}%", fontsize=10)
        ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        fig.tight_layout()
        args.out.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.out, dpi=110)
        plt.close(fig)


if __name__ == "__main__":
    main()
