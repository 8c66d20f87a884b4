"""Accuracy against measured latency, one chart per model, from channel_speed.py's lines.

    python benchmarks/plot_speed.py runs.jsonl --out docs/img --batch 64

Each point is one (method, structure, budget) averaged over its seeds: unstructured ASWL at its
sparsities (timed with the per-layer CSR/dense choice) and every channel method at its FLOPs
reductions (timed as the slimmed dense model), dense at 1.0. The x axis is the latency over the
dense model's, both timed interleaved in the same process (absolute times drift with the
machine's load; their ratio does not). Also prints the table.
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any


def load(paths: list[str]) -> list[dict[str, Any]]:
    rows = []
    for path in paths:
        rows += [json.loads(line) for line in Path(path).read_text().splitlines() if line]
    diverged = [row for row in rows if "diverged" in row]
    for row in diverged:
        print(f"diverged (left out): {row['model']} {row['method']} seed {row['seed']} "
              f"{row['reduction_asked']:g}x")
    rows = [row for row in rows if "diverged" not in row]
    for row in rows:  # lines of the first version of channel_speed.py: channel runs only
        row.setdefault("structure", "channel")
        row.setdefault("sparsity", None)
        row.setdefault("reduction", row.get("flops_reduction", 1.0))
        row.setdefault("budget", "flops")  # what the reduction counts: flops or latency
        if row["method"] == "dense" or row["structure"] == "weight":
            row["budget"] = "-"
    return rows


def points(rows: list[dict[str, Any]], batch: int) -> dict[str, list[dict[str, Any]]]:
    """Model -> one averaged point per (method, structure, budget)."""
    cells: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        budget = row["sparsity"] if row["structure"] == "weight" else row["reduction_asked"]
        if row["method"] == "dense":
            budget = None
        cells[(row["model"], row["method"], row["structure"], budget, row["budget"])].append(row)
    out: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for (model, method, structure, budget, cost), group in sorted(
            cells.items(), key=lambda item: str(item[0])):
        accuracy = [r["test_accuracy"] for r in group if "test_accuracy" in r]
        out[model].append({
            "method": method, "structure": structure, "budget": budget, "cost": cost,
            "seeds": len(group),
            "accuracy": statistics.mean(accuracy) if accuracy else None,
            "accuracy_std": statistics.stdev(accuracy) if len(accuracy) > 1 else 0.0,
            "ms": statistics.median(r[f"slim_ms_b{batch}"] for r in group),
            "dense_ms": statistics.median(r[f"dense_ms_b{batch}"] for r in group),
            "speedup": statistics.mean(r[f"speedup_b{batch}"] for r in group),
            "speedup_std": statistics.stdev(r[f"speedup_b{batch}"] for r in group)
            if len(group) > 1 else 0.0,
            "reduction": statistics.mean(r["reduction"] for r in group)})
    return out


def markdown(rows: list[dict[str, Any]], model: str) -> None:
    """The RESULTS table of one model's channel runs: per (reduction asked, method, budget),
    mean +- std over seeds of the test accuracy and the measured speedup (batch 64), the
    reduction in the method's own cost model ("table cut"), measured / asked and batch 1;
    then, per reduction, each method's gap to ``aswl`` (latency budget)."""
    cells: dict[tuple, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        if row["model"] == model and row["structure"] == "channel":
            asked = 1.0 if row["method"] == "dense" else row["reduction_asked"]
            cells[(asked, row["method"], row["budget"])].append(row)

    def spread(values: list[float], digits: int = 2) -> str:
        std = statistics.stdev(values) if len(values) > 1 else 0.0
        return f"{statistics.mean(values):.{digits}f} +- {std:.{digits}f}"

    print(f"\n{model}\n")
    print("| speedup asked | method | budget | seeds | test acc. | table cut | "
          "measured speedup b64 | measured / asked | b1 |")
    print("|---:|---|---|---:|---:|---:|---:|---:|---:|")
    means: dict[tuple, float] = {}
    for (asked, method, budget), group in sorted(cells.items()):
        accuracy = [r["test_accuracy"] for r in group]
        means[(asked, method, budget)] = statistics.mean(accuracy)
        speed = [r["speedup_b64"] for r in group]
        met = statistics.mean(r["speedup_b64"] for r in group) / asked
        cut = statistics.mean(r["reduction"] for r in group)
        b1 = statistics.mean(r["speedup_b1"] for r in group)
        print(f"| {asked:g}x | `{method}` | {budget} | {len(group)} | {spread(accuracy)} | "
              f"{cut:.2f}x | {spread(speed)}x | {met:.2f} | {b1:.2f}x |")
    for asked in sorted({key[0] for key in means if key[0] > 1}):
        ours = means.get((asked, "aswl", "latency"))
        others = {f"{m}@{b}": v for (a, m, b), v in means.items()
                  if a == asked and (m, b) != ("aswl", "latency")}
        if ours is not None and others:
            gaps = ", ".join(f"{k} {ours - v:+.2f}" for k, v in sorted(others.items()))
            print(f"\n{asked:g}x: aswl@latency {ours:.2f}; minus each other: {gaps}")


def label(point: dict[str, Any]) -> str:
    if point["method"] == "dense":
        return "dense"
    if point["structure"] == "weight":
        return f"{point['method']} {point['budget']:.0%} weights"
    return f"{point['method']} channels {point['budget']:g}x {point['cost']}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("files", nargs="+")
    parser.add_argument("--out", default=None, help="folder for speed_<model>.png")
    parser.add_argument("--batch", type=int, default=64, choices=(1, 64))
    parser.add_argument("--prefix", default="speed_", help="file name: <prefix><model>.png")
    parser.add_argument("--markdown", action="store_true",
                        help="also print each model's channel runs as the RESULTS table")
    args = parser.parse_args()
    rows = load(args.files)
    if args.markdown:
        for model in sorted({row["model"] for row in rows}):
            markdown(rows, model)
    by_model = points(rows, args.batch)
    for model, found in by_model.items():
        print(f"\n{model} (batch {args.batch}, one thread)")
        print(f"{'point':38s} {'seeds':>5s} {'accuracy':>14s} {'ms':>8s} {'speedup':>15s}")
        for p in found:
            acc = ("-" if p["accuracy"] is None
                   else f"{p['accuracy']:.2f} +- {p['accuracy_std']:.2f}")
            speed = f"{p['speedup']:.2f}x +- {p['speedup_std']:.2f}"
            print(f"{label(p):38s} {p['seeds']:5d} {acc:>14s} {p['ms']:8.2f} {speed:>15s}")
        if args.out is None or all(p["accuracy"] is None for p in found):
            continue
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        figure, axes = plt.subplots(figsize=(6.4, 4.2))
        styles = {"weight": "o", "channel": "s"}
        for method, cost in sorted({(p["method"], p["cost"]) for p in found}):
            for structure in ("weight", "channel"):
                chosen = [p for p in found if p["method"] == method and p["cost"] == cost
                          and p["structure"] == structure and p["accuracy"] is not None]
                if not chosen:
                    continue
                chosen.sort(key=lambda p: p["speedup"])
                name = "dense" if method == "dense" else f"{method} ({structure}" + (
                    f", budget {cost})" if structure == "channel" else ")")
                axes.errorbar([1.0 / p["speedup"] for p in chosen],
                              [p["accuracy"] for p in chosen],
                              yerr=[p["accuracy_std"] for p in chosen],
                              marker="*" if method == "dense" else styles[structure],
                              label=name, capsize=2)
        axes.set_xlabel(f"measured CPU latency / dense latency (batch {args.batch}, one "
                        "thread, timed interleaved)")
        axes.set_ylabel("test accuracy (%)")
        axes.set_title(f"{model}: accuracy vs latency")
        axes.grid(alpha=0.3)
        axes.legend(fontsize=7)
        Path(args.out).mkdir(parents=True, exist_ok=True)
        figure.tight_layout()
        figure.savefig(Path(args.out) / f"{args.prefix}{model}.png", dpi=110)
        plt.close(figure)


if __name__ == "__main__":
    main()
