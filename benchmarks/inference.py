"""Inference latency of a pruned model on CPU: dense PyTorch, CSR for every pruned layer
(``torch.sparse`` alone), the per-layer timed choice of ``aswl.export.to_sparse_inference``,
and dense onnxruntime; plus the file sizes. The same tables as ``aswl bench``.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/inference.py --run runs/l300_98 \\
        --batches 1,64 --repeats 300
    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/inference.py --model resnet20 \\
        --sparsity 0.95 --batches 1,64        # random weights, magnitude-pruned per layer

Timings are interleaved (dense, CSR, auto, onnxruntime in a new random order each round) and
reported as medians of the process CPU time with one thread (wall time counts the waits for a
core on a shared machine; ``--clock wall`` uses it);
``--rounds`` repeats the whole measurement (new per-layer choice each time) and prints every
round, so the spread on a busy machine is visible.
"""

from __future__ import annotations

import argparse
import statistics
from pathlib import Path

import torch

from aswl.export.deploy import Source, bench, format_bench, load_source
from aswl.models import create_model, default_input_shape
from aswl.sparse import find_prunable, keep_count, topk_mask


def pruned_model(name: str, sparsity: float, seed: int = 0) -> torch.nn.Module:
    """A randomly initialised model, each Conv/Linear magnitude-pruned to ``sparsity``."""
    torch.manual_seed(seed)
    model = create_model(name, num_classes=10, input_shape=default_input_shape(name)).eval()
    with torch.no_grad():
        for layer in find_prunable(model).values():
            keep = keep_count(layer.weight.numel(), 1 - sparsity)
            layer.weight.mul_(topk_mask(layer.weight.abs(), keep))
    return model


def choices_table(result: dict) -> str:
    lines = ["| batch | layer | type | sparsity | dense ms | sparse ms | chosen |",
             "|---:|---|---|---:|---:|---:|---|"]
    for row in result["rows"]:
        for name, choice in row["choices"].items():
            lines.append(f"| {row['batch']} | {name} | {choice['type']} | "
                         f"{choice['sparsity']:.1%} | {choice['dense_ms']:.4f} | "
                         f"{choice['sparse_ms']:.4f} | "
                         f"{'sparse' if choice['sparse'] else 'dense'} |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", type=Path, action="append", help="an `aswl train` folder")
    parser.add_argument("--model", help="a registered model, randomly initialised and pruned")
    parser.add_argument("--sparsity", type=float, default=0.95)
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--clock", choices=("auto", "cpu", "wall"), default="auto",
                        help="cpu time of the process (default with 1 thread) or wall time")
    parser.add_argument("--layers", action="store_true", help="print the per-layer choices")
    args = parser.parse_args()
    sources = [load_source(run) for run in args.run or []]
    if args.model:
        shape = default_input_shape(args.model)
        sources.append(Source(pruned_model(args.model, args.sparsity), args.model, shape,
                              Path(f"random {args.model} at {args.sparsity:.1%} per layer")))
    batches = [int(b) for b in args.batches.split(",")]
    for source in sources:
        speedups: dict[int, list[float]] = {b: [] for b in batches}
        for _ in range(args.rounds):
            result = bench(source, batches, args.threads, args.repeats, args.clock)
            print(format_bench(result), "\n")
            if args.layers:
                print(choices_table(result), "\n")
            for row in result["rows"]:
                speedups[row["batch"]].append(row["speedup"])
        if args.rounds > 1:
            print("median speed-up of auto over dense across rounds: " + ", ".join(
                f"batch {b}: {statistics.median(v):.2f}x" for b, v in speedups.items()), "\n")


if __name__ == "__main__":
    main()
