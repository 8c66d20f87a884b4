"""Per-step training overhead of the sparse methods against dense training.

    .venv/bin/python benchmarks/overhead.py                       # lenet5 + resnet20, dense/aswl
    .venv/bin/python benchmarks/overhead.py --steps 20 --device cpu
    .venv/bin/python benchmarks/overhead.py --models resnet20,vgg16 --device cuda \\
        --methods dense,aswl,gmp,dpf,rigl --mask-intervals 1,16,default

One full training step is timed: forward, cross-entropy + ``method.regularizer()``, backward,
``method.after_backward()``, ``optimizer.step()`` and ``method.step()`` (the same sequence as
``aswl.train.loop``; optimiser from ``build_optimizer`` with the default config). All variants
of one model live in the same process and are interleaved step by step (the order rotates each
step) so that load changes, clocks and caches affect them alike. After ``--warmup`` steps,
``--steps`` steps are timed per variant; on CUDA each step is synchronised.

Reported per (model, method, mask_interval): the median step (a typical step: with
``mask_interval`` k > 1 most steps skip the mask update) and the mean step (the amortised cost,
mask updates included), each also as a ratio to dense. ``--mask-intervals`` takes integers and
``default`` (the method's own default); dense ignores it. ``plain`` is the model with no
method attached (no masks: plain PyTorch), the true dense cost; ``dense`` is the method that
keeps every mask at one.

Model shapes: ``name`` uses the model's native input (lenet5: 1x28x28, resnet20: 3x32x32), or
``name@CxHxW``. The batch is random data, the same for every variant of a model.

On a shared or busy CPU pass ``--threads 1``: with more torch threads than free cores the
threads wait on each other and every step becomes tens of times slower and very noisy.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
import yaml
from torch import Tensor, nn

from aswl.config import Config
from aswl.methods import SparseMethod, create_method, get_method
from aswl.models import create_model, default_input_shape
from aswl.train.optim import build_optimizer
from aswl.train.step import training_step


@dataclass
class Variant:
    model_name: str
    method: str
    mask_interval: int | None
    """None: dense or plain (not applicable)."""
    model: nn.Module
    sparse: SparseMethod | None
    """None: ``plain``, the model without any method attached (no masks at all)."""
    optimizer: torch.optim.Optimizer
    times: list[float]


def parse_model(spec: str) -> tuple[str, tuple[int, int, int]]:
    name, _, shape = spec.partition("@")
    if not shape:
        return name, tuple(default_input_shape(name))  # type: ignore[return-value]
    c, h, w = (int(v) for v in shape.lower().split("x"))
    return name, (c, h, w)


def parse_method(token: str) -> tuple[str, dict[str, Any]]:
    """``name`` or ``name:key=value+key=value`` (method options, values read as YAML), e.g.
    ``aswl:prior=uniform``."""
    name, _, rest = token.partition(":")
    options = {}
    for item in filter(None, rest.split("+")):
        key, _, value = item.partition("=")
        options[key] = yaml.safe_load(value)
    return name, options


def mask_intervals(method: str, tokens: list[str]) -> list[int | None]:
    """The distinct mask intervals to time for ``method`` (None for dense, plain and the
    methods without a ``mask_interval`` option: their schedule says when)."""
    if method in ("dense", "plain"):
        return [None]
    default = {f.name: f for f in dataclasses.fields(get_method(method).config_class)}
    if "mask_interval" not in default:
        return [None]
    out: list[int | None] = []
    for token in tokens:
        value = default["mask_interval"].default if token == "default" else int(token)
        if value not in out:
            out.append(value)
    return out


def build_variant(model_name: str, shape: tuple[int, int, int], method: str,
                  interval: int | None, total_steps: int, device: torch.device,
                  options: dict[str, Any]) -> Variant:
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=10, input_shape=shape).to(device)
    model.train()
    if method == "plain":
        config = Config()
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay)
        return Variant(model_name, method, None, model, None, optimizer, [])
    kwargs = dict(options)
    if interval is not None:
        kwargs["mask_interval"] = interval
    sparse = create_method(method, model, total_steps=total_steps, **kwargs)
    optimizer = build_optimizer(Config(), sparse)
    return Variant(model_name, method, interval, model, sparse, optimizer, [])


def train_step(v: Variant, images: Tensor, labels: Tensor) -> None:
    if v.sparse is not None:
        training_step(v.model, v.sparse, v.optimizer, images, labels)
        return
    loss = F.cross_entropy(v.model(images), labels)  # plain PyTorch: the true dense baseline
    v.optimizer.zero_grad()
    loss.backward()
    v.optimizer.step()


def bench_model(spec: str, methods: list[str], intervals: list[str], steps: int, warmup: int,
                batch_size: int, device: torch.device, sparsity: float,
                run_steps: int | None = None) -> list[Variant]:
    name, shape = parse_model(spec)
    total = warmup + steps
    built_for = max(total, run_steps or total)
    variants = []
    for token in methods:
        method, extra = parse_method(token)
        options = {} if method in ("dense", "plain") else {"target_sparsity": sparsity, **extra}
        for interval in mask_intervals(method, intervals):
            variant = build_variant(name, shape, method, interval, built_for, device, options)
            variant.method = token
            variants.append(variant)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, *shape, generator=generator).to(device)
    labels = torch.randint(0, 10, (batch_size,), generator=generator).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for step in range(total):
        shift = step % len(variants)
        for v in variants[shift:] + variants[:shift]:
            sync()
            start = time.perf_counter()
            train_step(v, images, labels)
            sync()
            if step >= warmup:
                v.times.append(time.perf_counter() - start)
    return variants


def table(variants: list[Variant]) -> str:
    lines = ["| model | method | mask_interval | median ms | mean ms | median / dense "
             "| mean / dense |", "|---|---|---:|---:|---:|---:|---:|"]
    by_model: dict[str, list[Variant]] = {}
    for v in variants:
        by_model.setdefault(v.model_name, []).append(v)
    for model, group in by_model.items():
        dense = next((v for v in group if v.method == "dense"), None)  # the baseline
        base_median = statistics.median(dense.times) if dense else None
        base_mean = statistics.fmean(dense.times) if dense else None
        for v in group:
            median, mean = statistics.median(v.times), statistics.fmean(v.times)
            ratio_median = f"{median / base_median:.2f}x" if base_median else "-"
            ratio_mean = f"{mean / base_mean:.2f}x" if base_mean else "-"
            interval = "-" if v.mask_interval is None else str(v.mask_interval)
            lines.append(f"| {model} | {v.method} | {interval} | {1e3 * median:.2f} | "
                         f"{1e3 * mean:.2f} | {ratio_median} | {ratio_mean} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="lenet5,resnet20",
                        help="comma list of model names, optionally name@CxHxW")
    parser.add_argument("--methods", default="dense,aswl",
                        help="comma list (dense = baseline; plain = no method attached; "
                             "name:key=value+key=value sets method options, e.g. "
                             "aswl:prior=uniform)")
    parser.add_argument("--mask-intervals", default="1,16,default",
                        help="comma list of integers and/or 'default'")
    parser.add_argument("--steps", type=int, default=100, help="timed steps per variant")
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--run-steps", type=int, default=18760,
                        help="the length of the training run the methods are built for (their "
                             "schedules and update cadences follow it); default: 20 epochs of "
                             "60,000 images at batch 64. The timed steps are its first ones")
    parser.add_argument("--sparsity", type=float, default=0.9, help="target_sparsity")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
    parser.add_argument("--threads", type=int, help="torch CPU threads (default: torch's)")
    args = parser.parse_args(argv)
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu")
                          if args.device == "auto" else args.device)
    if args.threads:
        torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    intervals = [t.strip() for t in args.mask_intervals.split(",") if t.strip()]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} threads")
    print(f"device {device} ({where}), torch {torch.__version__}, batch {args.batch_size}, "
          f"{args.steps} timed steps after {args.warmup} warm-up, target sparsity "
          f"{args.sparsity}\n")
    variants: list[Variant] = []
    for spec in (s.strip() for s in args.models.split(",") if s.strip()):
        variants += bench_model(spec, methods, intervals, args.steps, args.warmup,
                                args.batch_size, device, args.sparsity, args.run_steps)
    print(table(variants))


if __name__ == "__main__":
    main()
