"""File size and test accuracy of every export format of finished runs (the goals table).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/export_sizes.py --run runs/l300_98 \\
        --quantize none,fp16,bf16,int8,kmeans4,kmeans5,kmeans6 --onnx
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/export_sizes.py --run runs/l300_99 \\
        --prune-to 0.995        # further global magnitude pruning, no fine-tuning

Sizes are whole files (header included) against the fp32 payload of the dense model; the
accuracy is measured on the run's test set by loading the exported file back.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from aswl.export.deploy import export_model, load_source
from aswl.sparse import keep_count


def prune_globally(model: torch.nn.Module, names: list[str], sparsity: float) -> None:
    """Zero the smallest-magnitude weights of ``names`` so that ``sparsity`` of them are 0."""
    weights = [model.get_submodule(name).weight for name in names]
    scores = torch.cat([w.detach().abs().reshape(-1) for w in weights])
    keep = keep_count(scores.numel(), 1 - sparsity)
    threshold = torch.topk(scores, keep).values.min()
    with torch.no_grad():
        for weight in weights:
            weight.mul_(weight.abs() >= threshold)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, action="append", required=True)
    parser.add_argument("--quantize", default="none")
    parser.add_argument("--onnx", action="store_true", help="also the ONNX file")
    parser.add_argument("--prune-to", type=float, help="further global magnitude pruning")
    args = parser.parse_args()
    print("| run | sparsity | format | values | file bytes | vs dense fp32 | test accuracy "
          "| change |")
    print("|---|---:|---|---|---:|---:|---:|---:|")
    for run in args.run:
        source = load_source(run)
        names = source.layer_names()
        if args.prune_to:
            prune_globally(source.model, names, args.prune_to)
        weights = [source.model.get_submodule(n).weight for n in names]
        sparsity = 1 - sum(int(torch.count_nonzero(w)) for w in weights) / sum(
            w.numel() for w in weights)
        source.run_dir = None  # write into a scratch folder, leave report.json alone
        jobs = [("compact", q) for q in args.quantize.split(",")]
        jobs += [("onnx", "none")] if args.onnx else []
        baseline = None
        with tempfile.TemporaryDirectory() as tmp:
            for fmt, quantize in jobs:
                suffix = "onnx" if fmt == "onnx" else "safetensors"
                row = export_model(source, fmt, quantize, Path(tmp, f"{quantize}.{suffix}"))
                accuracy = row["test_accuracy"]
                baseline = accuracy if baseline is None else baseline
                print(f"| {run.name} | {sparsity:.2%} | {fmt} | {row['quantize']} | "
                      f"{row['bytes']:,} | {row['ratio']:.1f}x | {100 * accuracy:.2f}% | "
                      f"{100 * (accuracy - baseline):+.2f} |", flush=True)


if __name__ == "__main__":
    main()
