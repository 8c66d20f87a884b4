"""Per-step training cost of the sparse methods against plain PyTorch.

    .venv/bin/python benchmarks/overhead.py                 # 4 models x plain/dense/aswl/gmp/lamp
    .venv/bin/python benchmarks/overhead.py --quick         # the same, about a minute
    .venv/bin/python benchmarks/overhead.py --models resnet20,vgg16@3x32x32 --device cuda \\
        --methods plain,dense,aswl,gmp,dpf,rigl --mask-intervals 1,16,default

The headline is every method's step time over ``plain``'s: the same model with no method
attached (no masks, no parametrization: what a user's training loop costs without aswl), trained
with the same optimiser (SGD, momentum and weight decay of the default config). ``dense`` is
the method that keeps every mask at one: its ratio is the cost of the masking machinery alone.

One full training step is timed: forward, cross-entropy + ``method.regularizer()``, backward,
``method.after_backward()``, ``optimizer.step()`` and ``method.step()`` (``training_step``, the
order the trainer uses). All variants of one model live in the same process and are interleaved
round-robin step by step (the order rotates every round), so that load changes, clocks and caches
affect them alike; each model runs at least ``--rounds`` rounds and until ``--seconds`` have
passed. Reported: the median step (a typical step) and the mean step (amortised: the periodic
mask and attention work included), each also over plain's.

The methods are built for a run of ``--run-steps`` steps and the timing starts at ``--at`` of
it (the step counter is advanced and the masks are set for that step first): the default, 30%
of the run, is inside the sparsity ramp, where the masks are sparse and still move, the
expensive phase (at step 0 most masks are still all ones).

Torch uses one thread by default (``--threads``): on a shared CPU more threads than free cores
wait on each other and every step becomes slower and very noisy. Model shapes: ``name`` uses
the model's native input, or ``name@CxHxW``; the batch is random data, the same for every
variant of a model.
"""

from __future__ import annotations

import argparse
import dataclasses
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
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

MODELS = "lenet300,lenet5,resnet20,vgg16@3x32x32"
METHODS = "plain,dense,aswl,gmp,lamp"


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
    times: list[float] = field(default_factory=list)


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
                  options: dict[str, Any], start: int = 0) -> Variant:
    torch.manual_seed(0)
    model = create_model(model_name, num_classes=10, input_shape=shape).to(device)
    model.train()
    if method == "plain":
        config = Config()
        optimizer = torch.optim.SGD(model.parameters(), lr=config.lr, momentum=config.momentum,
                                    weight_decay=config.weight_decay)
        return Variant(model_name, method, None, model, None, optimizer)
    kwargs = dict(options)
    if interval is not None:
        kwargs["mask_interval"] = interval
    sparse = create_method(method, model, total_steps=total_steps, **kwargs)
    if start:  # jump into the run: the masks of that step
        sparse.step_count = start
        sparse.update_masks()
    optimizer = build_optimizer(Config(), sparse)
    return Variant(model_name, method, interval, model, sparse, optimizer)


def train_step(v: Variant, images: Tensor, labels: Tensor) -> None:
    if v.sparse is not None:
        training_step(v.model, v.sparse, v.optimizer, images, labels)
        return
    loss = F.cross_entropy(v.model(images), labels)  # plain PyTorch: the true dense baseline
    v.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    v.optimizer.step()


def bench_model(spec: str, methods: list[str], intervals: list[str], rounds: int,
                warmup: int, batch_size: int, device: torch.device, sparsity: float,
                run_steps: int | None = None, seconds: float = 0.0,
                at: float = 0.0) -> list[Variant]:
    """Build every variant of one model, then time them round-robin (see the module doc):
    at least ``rounds`` timed rounds and ``seconds``, from ``at`` of a run of ``run_steps``
    (default: just the steps timed here)."""
    name, shape = parse_model(spec)
    run_steps = run_steps or warmup + rounds
    start = int(at * run_steps)
    variants = []
    for token in methods:
        method, extra = parse_method(token)
        options = {} if method in ("dense", "plain") else {"target_sparsity": sparsity, **extra}
        for interval in mask_intervals(method, intervals):
            variant = build_variant(name, shape, method, interval, run_steps, device,
                                    options, start)
            variant.method = token
            variants.append(variant)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch_size, *shape, generator=generator).to(device)
    labels = torch.randint(0, 10, (batch_size,), generator=generator).to(device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    began, done = None, 0
    while True:
        if done >= warmup and began is None:
            began = time.perf_counter()
        if began is not None and done - warmup >= rounds and \
                time.perf_counter() - began >= seconds:
            break
        if start + done >= run_steps:  # never run past the schedule the methods follow
            break
        shift = done % len(variants)
        for v in variants[shift:] + variants[:shift]:
            sync()
            tick = time.perf_counter()
            train_step(v, images, labels)
            sync()
            if done >= warmup:
                v.times.append(time.perf_counter() - tick)
        done += 1
    return variants


def table(variants: list[Variant]) -> str:
    """Markdown table: median and mean ms per step, and both over ``plain``'s."""
    lines = ["| model | method | mask_interval | steps | median ms | median / plain | mean ms "
             "| mean / plain | median / dense |", "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    by_model: dict[str, list[Variant]] = {}
    for v in variants:
        by_model.setdefault(v.model_name, []).append(v)

    def ratio(value: float, base: float | None) -> str:
        return f"{value / base:.2f}x" if base else "-"

    for model, group in by_model.items():
        plain = next((v for v in group if v.method == "plain"), None)
        dense = next((v for v in group if v.method == "dense"), None)
        plain_median = statistics.median(plain.times) if plain else None
        plain_mean = statistics.fmean(plain.times) if plain else None
        dense_median = statistics.median(dense.times) if dense else None
        for v in group:
            median, mean = statistics.median(v.times), statistics.fmean(v.times)
            interval = "-" if v.mask_interval is None else str(v.mask_interval)
            lines.append(f"| {model} | {v.method} | {interval} | {len(v.times)} | "
                         f"{1e3 * median:.2f} | **{ratio(median, plain_median)}** | "
                         f"{1e3 * mean:.2f} | {ratio(mean, plain_mean)} | "
                         f"{ratio(median, dense_median)} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default=MODELS,
                        help=f"comma list of model names, optionally name@CxHxW ({MODELS})")
    parser.add_argument("--methods", default=METHODS,
                        help=f"comma list ({METHODS}); plain = no method attached, the "
                             "baseline; name:key=value+key=value sets method options, e.g. "
                             "aswl:prior=uniform")
    parser.add_argument("--mask-intervals", default="default",
                        help="comma list of integers and/or 'default' (the method's own)")
    parser.add_argument("--quick", action="store_true",
                        help="fewer rounds and seconds per model (about a minute in all)")
    parser.add_argument("--rounds", type=int, help="least timed rounds per model "
                        "(default 10; --quick 3)")
    parser.add_argument("--seconds", type=float, help="least timing seconds per model "
                        "(default 30; --quick 6)")
    parser.add_argument("--warmup", type=int, help="untimed rounds first (default 2; --quick 1)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--run-steps", type=int, default=18760,
                        help="the length of the training run the methods are built for (their "
                             "schedules and update cadences follow it); default: 20 epochs of "
                             "60,000 images at batch 64")
    parser.add_argument("--at", type=float, default=0.3,
                        help="fraction of the run at which the timed steps start")
    parser.add_argument("--sparsity", type=float, default=0.9, help="target_sparsity")
    parser.add_argument("--device", default="cpu", help="cpu, cuda, cuda:N or auto")
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    args = parser.parse_args(argv)
    rounds = args.rounds if args.rounds is not None else (3 if args.quick else 10)
    seconds = args.seconds if args.seconds is not None else (6.0 if args.quick else 30.0)
    warmup = args.warmup if args.warmup is not None else (1 if args.quick else 2)
    if not 0.0 <= args.at < 1.0:
        parser.error(f"--at {args.at}: a fraction in [0, 1)")
    device = torch.device(("cuda" if torch.cuda.is_available() else "cpu")
                          if args.device == "auto" else args.device)
    torch.set_num_threads(args.threads)
    methods = [m.strip() for m in args.methods.split(",") if m.strip()]
    intervals = [t.strip() for t in args.mask_intervals.split(",") if t.strip()]
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else (
        f"{platform.processor() or platform.machine()}, {torch.get_num_threads()} thread(s)")
    print(f"device {device} ({where}), torch {torch.__version__}, batch {args.batch_size}, "
          f"timed from step {int(args.at * args.run_steps)} of {args.run_steps}, at least "
          f"{rounds} rounds and {seconds:g} s per model after {warmup} warm-up rounds, "
          f"target sparsity {args.sparsity}\n")
    variants: list[Variant] = []
    for spec in (s.strip() for s in args.models.split(",") if s.strip()):
        done = bench_model(spec, methods, intervals, rounds, warmup, args.batch_size, device,
                           args.sparsity, args.run_steps, seconds, args.at)
        print("\n".join(table(done).splitlines()[2:]), file=sys.stderr, flush=True)  # progress
        variants += done
    print(table(variants))


if __name__ == "__main__":
    main()
