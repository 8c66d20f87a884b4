"""``aswl export`` and ``aswl bench``: write a run's model in a deployable format, time it.

Imports nothing heavy at module level, so that ``aswl --help`` and ``--version`` stay light.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from aswl.export.deploy import Source

__all__ = ["EXPORT_FORMATS", "add_export_commands", "cmd_bench", "cmd_export", "cmd_profile"]


MAX_BATCH = 1 << 16
"""Largest ``aswl bench --batch`` size."""
MAX_BATCH_VALUES = 1 << 28
"""Most input values of one benchmark batch (batch * C*H*W: 1 GiB in fp32)."""
MAX_THREADS = 1024
MAX_REPEATS = 1_000_000


def _integers(option: str, text: str, example: str) -> list[int]:
    from aswl.export import ExportError
    from aswl.safe_yaml import short_repr

    try:
        return [int(part) for part in text.split(",")]
    except ValueError:
        raise ExportError(f"{option} {short_repr(text)}: give integers like {example}") from None


def _parse_shape(text: str | None) -> tuple[int, ...] | None:
    from aswl.export import ExportError
    from aswl.models import ModelError, check_input_shape

    if not text:
        return None
    try:
        return check_input_shape(_integers("--input-shape", text, "1,28,28"))
    except ModelError as err:
        raise ExportError(f"--input-shape: {err}") from None


def _check_bench_options(args: argparse.Namespace) -> list[int]:
    """``--batch`` sizes, each in [1, MAX_BATCH]; ``--threads`` and ``--repeats`` bounded."""
    from aswl.export import ExportError

    batches = _integers("--batch", args.batch, "1,64")
    for option, values, top in (("--batch", batches, MAX_BATCH),
                                ("--threads", [args.threads], MAX_THREADS),
                                ("--repeats", [args.repeats], MAX_REPEATS)):
        if not all(1 <= value <= top for value in values):
            raise ExportError(f"{option} must be in [1, {top:,}]")
    return batches


def _source_args(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("source", type=Path,
                        help="an `aswl train` output folder, or a model file with --model")
    parser.add_argument("--model", help="architecture of a model file (see `aswl models`)")
    parser.add_argument("--num-classes", type=int, default=10,
                        help="classes of a model file's model (default 10)")
    parser.add_argument("--input-shape", help="C,H,W of a model file's input (default: the "
                        "model's own)")


def _load_source(args: argparse.Namespace, with_data: bool) -> Source:
    from aswl.export.deploy import load_source

    return load_source(args.source, args.model, args.num_classes,
                       _parse_shape(args.input_shape), with_data=with_data)


def cmd_export(args: argparse.Namespace) -> int:
    """``aswl export``: write one file and print its size and test accuracy."""
    from aswl.export.deploy import export_model, format_exports

    source = _load_source(args, with_data=not args.no_eval)
    row = export_model(source, args.format, args.quantize, args.out, evaluate=not args.no_eval)
    print(format_exports([row]))
    return 0


def cmd_bench(args: argparse.Namespace) -> int:
    """``aswl bench``: latency and file sizes as tables."""
    from aswl.export import ExportError
    from aswl.export.deploy import bench, format_bench

    batches = _check_bench_options(args)
    source = _load_source(args, with_data=True)
    values = max(batches) * math.prod(source.input_shape)
    if values > MAX_BATCH_VALUES:
        raise ExportError(f"--batch {max(batches):,} of inputs {source.input_shape} is "
                          f"{values:,} input values, more than {MAX_BATCH_VALUES:,}; use a "
                          "smaller --batch")
    result = bench(source, batches, args.threads, args.repeats, args.clock)
    print(format_bench(result))
    if args.json:
        from aswl.io import write_text

        write_text(args.json, json.dumps(result, indent=2))
    return 0


def cmd_profile(args: argparse.Namespace) -> int:
    """``aswl profile``: measure (or load from the cache) a model's latency table."""
    import torch

    from aswl.export import ExportError
    from aswl.models import create_model, default_input_shape
    from aswl.safe_yaml import yaml_load
    from aswl.sparse.latency import profile_latency

    batch = _integers("--batch", args.batch, "64")[0]
    if not (1 <= batch <= MAX_BATCH and 1 <= args.threads <= MAX_THREADS):
        raise ExportError(f"--batch must be in [1, {MAX_BATCH:,}], --threads in "
                          f"[1, {MAX_THREADS:,}]")
    options = {}
    for item in args.model_arg or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ExportError(f"--model-arg {item!r}: give KEY=VALUE, e.g. width=16")
        options[key] = yaml_load(value)
    shape = _parse_shape(args.input_shape) or default_input_shape(args.model)
    torch.set_num_threads(args.threads)
    model = create_model(args.model, num_classes=args.num_classes, input_shape=shape,
                         **options).to(args.device)
    example = torch.zeros(1, *shape, device=args.device)
    table = profile_latency(model, example, batch=batch, path=args.out)
    total = sum(entry["ms"][-1][-1] for entry in table.layers.values())
    print(f"{args.model}: {len(table.layers)} layers, {total:.3f} ms at full width "
          f"(batch {batch}, {table.header['threads']} thread(s), {table.header['device']}); "
          + (f"loaded from {table.path} (profiled in {table.header['seconds']:.1f} s)"
             if table.cached else f"profiled in {table.header['seconds']:.1f} s, written "
             f"to {table.path}"))
    return 0


EXPORT_FORMATS = ("compact", "safetensors", "onnx")
"""``aswl.export.deploy.FORMATS``, spelled here so that ``--help`` and ``--version`` import no
torch (a test checks that both agree)."""


def add_export_commands(sub: Any) -> None:
    """``export`` and ``bench`` on the ``aswl`` sub-command parser."""
    export = sub.add_parser("export", help="write a run's model as a compact, safetensors or "
                            "ONNX file (optionally quantized) and report size and accuracy")
    _source_args(export)
    export.add_argument("--format", choices=EXPORT_FORMATS, default="compact")
    export.add_argument("--quantize", default="none",
                        help="none (lossless), fp16, bf16, int8 (per-layer linear) or kmeans4 "
                             "to kmeans8 (k-means codebook); int8/kmeans need --format compact")
    export.add_argument("--out", type=Path, help="output file (default: next to the model)")
    export.add_argument("--no-eval", action="store_true",
                        help="do not score the exported file on the test set")
    export.set_defaults(func=cmd_export)
    bench_parser = sub.add_parser("bench", help="inference latency of dense vs sparse model "
                                  "and file sizes, as tables")
    _source_args(bench_parser)
    bench_parser.add_argument("--batch", default="1,64", help="comma list (default 1,64)")
    bench_parser.add_argument("--threads", type=int, default=1)
    bench_parser.add_argument("--repeats", type=int, default=100,
                              help="timed calls per variant (interleaved; median)")
    bench_parser.add_argument("--clock", choices=("auto", "cpu", "wall"), default="auto",
                              help="cpu: process CPU time (default with 1 thread; robust on a "
                                   "shared machine), wall: elapsed time (default with more)")
    bench_parser.add_argument("--json", type=Path, help="also write the result as JSON")
    bench_parser.set_defaults(func=cmd_bench)
    profile = sub.add_parser("profile", help="measure a model's per-layer latency table for "
                             "channel mode's budget: latency (cached; reused by runs)")
    profile.add_argument("--model", required=True, help="architecture (see `aswl models`)")
    profile.add_argument("--model-arg", action="append", metavar="KEY=VALUE",
                         help="a builder option, e.g. width=16 (repeatable)")
    profile.add_argument("--num-classes", type=int, default=10)
    profile.add_argument("--input-shape", help="C,H,W (default: the model's own)")
    profile.add_argument("--batch", default="1", help="the deployment batch (default 1)")
    profile.add_argument("--threads", type=int, default=1)
    profile.add_argument("--device", default="cpu", help="cpu or cuda")
    profile.add_argument("--out", type=Path, help="the table file (default: the cache, "
                         "~/.cache/aswl or $ASWL_CACHE); pass it as method.latency_table")
    profile.set_defaults(func=cmd_profile)
