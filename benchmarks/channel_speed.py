"""Channel mode: accuracy and measured CPU latency of slimmed models against dense.

Trains each (model, method, FLOPs reduction, seed) with the same recipe (SGD momentum 0.9,
cosine lr, weight decay 5e-4, the channel ramp over the first 75% of the steps, masks frozen
and fine-tuned after it), exports the slimmed model and times it against the dense model of
the same architecture, interleaved in one process, one thread, at batch 1 and 64. With
``--epochs 0`` nothing is trained: the masks come from the initial weights (latency only).
``--sparsities`` adds unstructured ASWL runs at those sparsities, timed with the per-layer
choice of CSR or dense kernels of ``aswl bench`` (so one chart can show both modes).

    python benchmarks/channel_speed.py --model lenet5 --dataset fashion-mnist --epochs 4 \\
        --methods dense,aswl,l1_filter,slimming,group_norm --reductions 2,3 --seeds 0 \\
        --sparsities 0.9,0.95,0.98

``--budget latency`` sets the reductions in measured latency of the Conv/Linear layers (a
table timed once at ``--latency-batch``, one thread, cached) instead of FLOPs; a method
written ``aswl@flops`` keeps the FLOPs budget (a FLOPs reduction of the same factor) in such a
grid. Each row has the requested and the measured speedup (batch 64).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

import aswl
from aswl.data import build_datasets
from aswl.export.sparse_modules import fold_batchnorm, interleaved_ms, to_sparse_inference
from aswl.finite import NonFiniteError
from aswl.models import create_model


def evaluate(model: torch.nn.Module, loader: DataLoader) -> float:
    model.eval()
    correct = total = 0
    with torch.no_grad():
        for x, y in loader:
            correct += int((model(x).argmax(1) == y).sum())
            total += len(y)
    return 100.0 * correct / max(1, total)


def run(args: argparse.Namespace, method: str, reduction: float, seed: int,
        data: Any, sparsity: float | None = None) -> dict[str, Any]:
    """One run; ``sparsity``: an unstructured run of ``method`` at that sparsity instead."""
    torch.manual_seed(seed)
    shape = data.input_shape if data is not None else tuple(args.input_shape)
    extra = {"width": int(args.width)} if args.model.startswith("resnet") else \
        {"width": args.width} if args.model.startswith("mobilenet") else {}
    method, _, budget = method.partition("@")
    budget = budget or args.budget
    latency = {"latency_batch": args.latency_batch} if budget == "latency" else {}
    model = create_model(args.model, num_classes=10, input_shape=shape, **extra)
    dense_reference = create_model(args.model, num_classes=10, input_shape=shape, **extra).eval()
    example = torch.zeros(1, *shape)
    loader = None
    steps = 1
    if data is not None and args.epochs > 0:
        generator = torch.Generator().manual_seed(seed)
        loader = DataLoader(data.train, batch_size=args.batch_size, shuffle=True,
                            generator=generator)
        steps = args.epochs * len(loader)
    sparse_method = None
    if sparsity is not None:
        sparse_method = aswl.create_method(method, model, total_steps=steps,
                                           target_sparsity=sparsity)
        params = sparse_method.weight_parameters()
    elif method != "dense":
        sparse_method = aswl.create_method(
            method, model, total_steps=steps, structure="channel", example_inputs=example,
            target_sparsity=1.0 - 1.0 / reduction, budget=budget, **latency)
        params = sparse_method.weight_parameters()
    else:
        params = list(model.parameters())
    start = time.perf_counter()
    if loader is not None:
        optimizer = torch.optim.SGD(params, lr=args.lr, momentum=0.9, weight_decay=5e-4)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
        model.train()
        for _ in range(args.epochs):
            for x, y in loader:
                if sparse_method is None:
                    loss = F.cross_entropy(model(x), y)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                else:
                    aswl.training_step(model, sparse_method, optimizer, x, y)
                schedule.step()
    train_seconds = time.perf_counter() - start
    kept: list[int] = []
    plain, removed = model.eval(), 0.0
    if sparse_method is not None:
        sparse_method.finalize()
        plain = sparse_method.export()
        removed = sparse_method.global_sparsity()  # of FLOPs (channel) or weights (weight)
        kept = [int(m.sum()) for m in getattr(sparse_method, "channel_masks", {}).values()]
    row: dict[str, Any] = {
        "model": args.model, "method": method, "budget": budget,
        "structure": "weight" if sparsity is not None else "channel",
        "sparsity": sparsity, "reduction_asked": None if sparsity is not None else reduction,
        "removed": round(removed, 4), "reduction": round(1.0 / max(1e-9, 1.0 - removed), 3),
        "seed": seed, "epochs": args.epochs,
        "params_dense": sum(p.numel() for p in dense_reference.parameters()),
        "params": sum(p.numel() for p in plain.parameters()), "kept_channels": kept,
        "train_seconds": round(train_seconds, 1)}
    if data is not None and args.epochs > 0:
        test = DataLoader(data.test, batch_size=512)
        row["test_accuracy"] = round(evaluate(plain, test), 2)
    torch.set_num_threads(1)
    for batch in (1, 64):
        x = torch.randn(batch, *shape)
        if sparsity is not None:  # CSR where it is faster, layer by layer, at this batch
            plain = to_sparse_inference(sparse_method.export(), example=x, repeats=10)
        elif batch == 1:  # BatchNorm folded on both sides, as `aswl bench` times them
            plain, dense_reference = fold_batchnorm(plain), fold_batchnorm(dense_reference)
        with torch.no_grad():
            ms = interleaved_ms({"dense": lambda x=x, d=dense_reference: d(x),
                                 "slim": lambda x=x, m=plain: m(x)},
                                args.repeats)
        row[f"dense_ms_b{batch}"] = round(ms["dense"], 3)
        row[f"slim_ms_b{batch}"] = round(ms["slim"], 3)
        row[f"speedup_b{batch}"] = round(ms["dense"] / ms["slim"], 2)
    if sparsity is None and method != "dense":
        row["speedup_requested"] = round(reduction, 2)  # of the budget's cost
        row["speedup_met"] = round(row["speedup_b64"] / reduction, 3)
    torch.set_num_threads(args.threads)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="lenet5")
    parser.add_argument("--width", type=float, default=16,
                        help="ResNet base width, or MobileNetV2 channel multiplier")
    parser.add_argument("--budget", choices=("flops", "params", "latency"), default="flops")
    parser.add_argument("--latency-batch", type=int, default=64)
    parser.add_argument("--dataset", default="fashion-mnist")
    parser.add_argument("--input-shape", type=int, nargs=3, default=(3, 32, 32),
                        help="used with --epochs 0 (no data)")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--limit-train", type=int, default=None)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--methods", default="dense,aswl,l1_filter,slimming,group_norm")
    parser.add_argument("--reductions", default="2,3")
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--sparsities", default="",
                        help="also unstructured ASWL at these sparsities, e.g. 0.9,0.95,0.98")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--out", default=None, help="append one JSON line per run")
    args = parser.parse_args()
    data = None
    if args.epochs > 0:
        data = build_datasets(args.dataset, augment=False, limit_train=args.limit_train)
    for seed in (int(s) for s in args.seeds.split(",")):
        for reduction in (float(r) for r in args.reductions.split(",")):
            for method in filter(None, args.methods.split(",")):
                if method == "dense" and not math.isclose(reduction, float(
                        args.reductions.split(",")[0])):
                    continue  # one dense run per seed
                try:
                    emit(args, run(args, method, reduction, seed, data))
                except NonFiniteError as err:  # a diverged run is a result too
                    emit(args, {"model": args.model, "method": method, "seed": seed,
                                "reduction_asked": reduction, "diverged": str(err)[:200]})
        for sparsity in (float(s) for s in args.sparsities.split(",") if s):
            emit(args, run(args, "aswl", 1.0, seed, data, sparsity=sparsity))


def emit(args: argparse.Namespace, row: dict[str, Any]) -> None:
    print(json.dumps(row), flush=True)
    if args.out:
        with open(args.out, "a") as handle:
            handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
