"""Inference latency of an exported sparse model: dense Linear vs CSR SparseLinear (CPU).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/inference.py --model lenet300 \\
        --sparsities 0,0.9,0.95,0.98,0.99 --batches 1,64
    .venv/bin/python benchmarks/inference.py --run runs/main     # a finished run's model

Each layer keeps its largest-magnitude weights at the given sparsity (uniform per layer) of a
randomly initialised model, or the exported weights of ``--run``. Prints a Markdown table of
the median latency over ``--repeats`` forward passes and the speed-up of the sparse version.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from aswl.export import to_sparse_inference
from aswl.models import create_model, default_input_shape
from aswl.sparse import find_prunable, keep_count, topk_mask


def median_ms(model: torch.nn.Module, x: torch.Tensor, repeats: int) -> float:
    times = []
    with torch.no_grad():
        for _ in range(5):
            model(x)
        for _ in range(repeats):
            start = time.perf_counter()
            model(x)
            times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def pruned_model(name: str, sparsity: float) -> torch.nn.Module:
    torch.manual_seed(0)
    model = create_model(name, num_classes=10, input_shape=default_input_shape(name)).eval()
    with torch.no_grad():
        for layer in find_prunable(model).values():
            keep = keep_count(layer.weight.numel(), 1 - sparsity)
            layer.weight.mul_(topk_mask(layer.weight.abs(), keep))
    return model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="lenet300")
    parser.add_argument("--sparsities", default="0,0.9,0.95,0.98,0.99")
    parser.add_argument("--batches", default="1,64")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--run", type=Path, help="an `aswl train` output folder")
    args = parser.parse_args()
    cases = []
    if args.run:
        import yaml

        config = yaml.safe_load((args.run / "config.yaml").read_text())
        model = create_model(config["model"], num_classes=10,
                             input_shape=default_input_shape(config["model"])).eval()
        model.load_state_dict(load_file(str(args.run / "model.safetensors")))
        cases.append((f"{args.run}", config["model"], model))
    else:
        for sparsity in (float(s) for s in args.sparsities.split(",")):
            cases.append((f"{sparsity:.0%}", args.model, pruned_model(args.model, sparsity)))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} thread(s)\n")
    print("| model | sparsity | batch | dense ms | sparse (CSR) ms | speed-up |")
    print("|---|---|---:|---:|---:|---:|")
    for label, name, model in cases:
        sparse = to_sparse_inference(model, min_sparsity=0.0)
        for batch in (int(b) for b in args.batches.split(",")):
            x = torch.randn(batch, *default_input_shape(name))
            dense_ms = median_ms(model, x, args.repeats)
            sparse_ms = median_ms(sparse, x, args.repeats)
            print(f"| {name} | {label} | {batch} | {dense_ms:.3f} | {sparse_ms:.3f} | "
                  f"{dense_ms / sparse_ms:.2f}x |")


if __name__ == "__main__":
    main()
