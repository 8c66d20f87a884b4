"""``aswl export`` and ``aswl bench``: ship a pruned model small and run it fast.

A *source* is a finished ``aswl train`` folder (its config gives the model and the test set)
or a model file (plain or compact safetensors) with ``--model NAME``.
"""

from __future__ import annotations

import copy
import json
import logging
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from aswl.export.compact import (
    ExportError,
    check_quantize,
    file_metadata,
    load_weights,
    save_compact,
    save_dense,
    tensor_bytes,
)
from aswl.export.sparse_modules import (
    default_clock,
    fold_batchnorm,
    interleaved_ms,
    to_sparse_inference,
)
from aswl.sparse.channels import SLIM_KEY

log = logging.getLogger(__name__)
FORMATS = ("compact", "safetensors", "onnx")


@dataclass
class Source:
    """A loaded model to export or benchmark."""

    model: nn.Module
    model_name: str
    input_shape: tuple[int, ...]
    path: Path
    run_dir: Path | None = None
    test: Any = None
    full_width: nn.Module | None = None
    """For a channel-slimmed model: the same architecture at full width (for timing)."""
    record: dict[str, str] = field(default_factory=dict)
    """A channel-slimmed model's record (its files carry it, so loaders can rebuild it)."""
    request: dict[str, Any] = field(default_factory=dict)
    """A channel run's budget and target_sparsity (from its config), for ``aswl bench``."""

    @property
    def dense_bytes(self) -> int:
        """fp32 payload of every tensor (the reference for size ratios)."""
        return sum(t.numel() * 4 if t.is_floating_point() else t.numel() * t.element_size()
                   for t in self.model.state_dict().values())

    def layer_names(self) -> list[str]:
        return [name for name, module in self.model.named_modules()
                if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d))]


def load_source(path: Path, model_name: str | None = None, num_classes: int = 10,
                input_shape: tuple[int, ...] | None = None, with_data: bool = True) -> Source:
    """The model of a run folder (and its test set when ``with_data``) or of a model file."""
    from aswl.models import create_model, default_input_shape

    path = Path(path)
    if path.is_dir():
        from aswl.runs import load_run

        if not (path / "config.yaml").is_file():
            raise ExportError(f"{path} has no config.yaml: give an `aswl train` output folder, "
                              "or a model file with --model NAME")
        config, data, model = load_run(path)
        weights = path / "model.safetensors"
        if not weights.is_file():
            weights = path / "model.sparse.safetensors"
        if not weights.is_file():
            raise ExportError(f"{path} holds no model.safetensors: the run did not finish; "
                              "resume it first")
        full, record = _full_width(model, weights)
        load_weights(model, weights)
        return Source(model.eval(), config.model, tuple(data.input_shape), weights, path,
                      data.test if with_data else None, full, record, _request(config))
    if not path.is_file():
        raise ExportError(f"{path} not found: give a run folder or a model file")
    if path.suffix == ".onnx":
        raise ExportError(f"{path} is ONNX: export from the run folder or a safetensors file")
    if not model_name:
        raise ExportError(f"{path} is a model file: name its architecture with --model NAME "
                          "(see `aswl models`)")
    shape = input_shape or default_input_shape(model_name)
    model = create_model(model_name, num_classes=num_classes, input_shape=shape)
    full, record = _full_width(model, path)
    load_weights(model, path)
    return Source(model.eval(), model_name, tuple(shape), path, full_width=full, record=record)


def _request(config: Any) -> dict[str, Any]:
    """A channel run's budget and target_sparsity; {} for other runs."""
    if config.method_structure() != "channel":
        return {}
    method = config.method_config()
    return {"budget": method.budget, "target_sparsity": method.target_sparsity}


def _full_width(model: nn.Module, path: Path) -> tuple[nn.Module | None, dict[str, str]]:
    """For a slimmed model's file: a full-width copy of the freshly built ``model`` and the
    file's channel record; (None, {}) otherwise."""
    record = {k: v for k, v in file_metadata(path).items() if k == SLIM_KEY}
    return (copy.deepcopy(model).eval() if record else None), record


# ------------------------------------------------------------------------------- export

def default_out(source: Source, fmt: str, quantize: str) -> Path:
    """runs/x/model.sparse.safetensors, model.sparse.kmeans5.safetensors, model.onnx, ..."""
    base = (source.run_dir / "model") if source.run_dir else \
        source.path.with_name(source.path.name.split(".")[0])
    tag = {"compact": ".sparse", "safetensors": ".dense", "onnx": ""}[fmt]
    tag += "" if quantize == "fp32" else f".{quantize}"
    return Path(f"{base}{tag}.{'onnx' if fmt == 'onnx' else 'safetensors'}")


class _OnnxModule(nn.Module):
    """An onnxruntime session behind ``nn.Module`` (to score it like a PyTorch model)."""

    def __init__(self, path: Path) -> None:
        super().__init__()
        from aswl.export.onnx_export import session

        self.session = session(path)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        from aswl.export.onnx_export import run_session

        return torch.from_numpy(run_session(self.session, x.contiguous()))


def _accuracy(model: nn.Module, test: Any) -> float:
    from aswl.data.loader import evaluate

    with torch.no_grad():
        return evaluate(model, test, 256, torch.device("cpu"))


def export_model(source: Source, fmt: str, quantize: str | None = None,
                 out: Path | None = None, evaluate: bool = True) -> dict[str, Any]:
    """Write ``source`` as ``fmt``; returns a row: file, bytes, ratio, test accuracy, note."""
    if fmt not in FORMATS:
        raise ExportError(f"unknown format {fmt!r}: use one of {', '.join(FORMATS)}")
    mode = check_quantize(quantize)
    if fmt == "safetensors" and mode not in ("fp32", "fp16", "bf16"):
        raise ExportError(f"--quantize {mode} needs --format compact (safetensors stores "
                          "fp32, fp16 or bf16)")
    if fmt == "onnx" and mode != "fp32":
        raise ExportError("ONNX export is fp32; quantize with --format compact")
    out = Path(out) if out else default_out(source, fmt, mode)
    if out.resolve() == source.path.resolve():
        raise ExportError(f"--out {out} would overwrite the model being exported; choose "
                          "another file")
    from aswl.io import make_folder, remove_temp_files, write_text

    make_folder(out.parent)  # WriteError (one line, naming the folder and the fix)
    if remove_temp_files(out):
        log.info("removed temporary files of %s left by an interrupted export", out.name)
    model = source.model
    note = ""
    if fmt == "compact":
        payload = save_compact(model, source.layer_names(), out, quantize=mode,
                               extra=source.record)
    elif fmt == "safetensors":
        plain = copy.deepcopy(model)
        if mode != "fp32":
            plain = plain.to({"fp16": torch.float16, "bf16": torch.bfloat16}[mode])
        payload = save_dense(plain, out, source.record)
    else:
        from aswl.export.onnx_export import export_onnx

        info = export_onnx(model, source.input_shape, out)
        payload, note = info["bytes"], info["note"]
        if info["sparse_initializers"]:
            note = note or f"{info['sparse_initializers']} sparse initializers"
    size = out.stat().st_size
    row: dict[str, Any] = {
        "file": str(out), "format": fmt, "quantize": mode, "bytes": size,
        "payload_bytes": payload, "dense_fp32_bytes": source.dense_bytes,
        "ratio": source.dense_bytes / size, "payload_ratio": source.dense_bytes / payload,
        "test_accuracy": None, "note": note}
    if evaluate and source.test is not None:
        reloaded: nn.Module
        if fmt == "onnx":
            reloaded = _OnnxModule(out)
        else:
            blank = source.full_width if source.full_width is not None else model
            reloaded = load_weights(copy.deepcopy(blank), out)
        row["test_accuracy"] = _accuracy(reloaded.eval(), source.test)
    if source.run_dir is not None:
        report_path = source.run_dir / "report.json"
        if report_path.is_file():
            try:
                report = json.loads(report_path.read_bytes())
            except (OSError, ValueError, RecursionError) as err:
                report = None
                log.warning("%s is unreadable (%s): the export is not recorded in it",
                            report_path, str(err)[:120])
            if isinstance(report, dict):
                report.setdefault("exports", {})[out.name] = row
                write_text(report_path, json.dumps(report, indent=2))
    return row


def format_exports(rows: list[dict[str, Any]]) -> str:
    """A Markdown table of export rows."""
    lines = ["| file | format | values | bytes | vs dense fp32 | test accuracy | note |",
             "|---|---|---|---:|---:|---:|---|"]
    for row in rows:
        accuracy = "-" if row["test_accuracy"] is None else f"{100 * row['test_accuracy']:.2f}%"
        lines.append(f"| {row['file']} | {row['format']} | {row['quantize']} | "
                     f"{row['bytes']:,} | {row['ratio']:.1f}x | {accuracy} | {row['note']} |")
    return "\n".join(lines)


# -------------------------------------------------------------------------------- bench

def _example(source: Source, batch: int) -> torch.Tensor:
    if source.test is not None and hasattr(source.test, "images") and \
            len(source.test) >= batch:
        return source.test.images[:batch].float().contiguous()
    generator = torch.Generator().manual_seed(0)
    return torch.randn(batch, *source.input_shape, generator=generator)


def _variants(models: dict[str, nn.Module], ort_session: Any,
              x: torch.Tensor) -> dict[str, Callable[[], Any]]:
    fns: dict[str, Callable[[], Any]] = {name: (lambda m=m: m(x)) for name, m in models.items()}
    if ort_session is not None:
        from aswl.export.onnx_export import run_session

        fns["onnxruntime"] = lambda: run_session(ort_session, x)
    return fns


def bench(source: Source, batches: list[int], threads: int = 1, repeats: int = 100,
          clock: str = "auto") -> dict[str, Any]:
    """Latency of the dense model, CSR for every pruned layer, the per-layer auto choice and
    dense onnxruntime, per batch size; and the sizes of each file format."""
    torch.set_num_threads(threads)
    timer = {"cpu": time.process_time, "wall": time.perf_counter}.get(clock, default_clock())
    dense = source.model.eval()
    csr_all = to_sparse_inference(dense, min_sparsity=0.5, fold_bn=False)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        sizes = {"dense fp32 (safetensors)": Path(tmp, "d.safetensors"),
                 "compact v2, lossless": Path(tmp, "c.safetensors")}
        save_dense(dense, sizes["dense fp32 (safetensors)"])
        save_compact(dense, source.layer_names(), sizes["compact v2, lossless"])
        ort_session = None
        try:
            from aswl.export.onnx_export import export_onnx, session

            export_onnx(dense, source.input_shape, Path(tmp, "m.onnx"))
            sizes["ONNX, sparse initializers"] = Path(tmp, "m.onnx")
            ort_session = session(Path(tmp, "m.onnx"), threads)
        except ExportError as err:
            log.info("no onnxruntime column: %s", err)
        file_sizes = {name: path.stat().st_size for name, path in sizes.items()}
        # like with like: the slimmed model's BatchNorms are folded (auto), so are these
        full_width = fold_batchnorm(source.full_width) if source.full_width is not None \
            else None
        for batch in batches:
            x = _example(source, batch)
            auto = to_sparse_inference(dense, example=x)
            models = {"dense": dense, "csr": csr_all, "auto": auto}
            if full_width is not None:  # a slimmed model: time the full width too
                models["full_width"] = full_width
            fns = _variants(models, ort_session, x)
            with torch.no_grad():
                ms = interleaved_ms(fns, repeats, timer)
                diff = float((auto(x) - dense(x)).abs().max())
            sparse_layers = sum(c["sparse"] for c in auto.sparse_choices.values())
            slimmed = ({"full_width_speedup": ms["full_width"] / ms["auto"]}
                       if "full_width" in ms else {})
            rows.append({"batch": batch, **{f"{k}_ms": v for k, v in ms.items()}, **slimmed,
                         "speedup": ms["dense"] / ms["auto"], "max_abs_diff": diff,
                         "sparse_layers": f"{sparse_layers}/{len(source.layer_names())}",
                         "choices": auto.sparse_choices})
    requested = _check_request(source.request, rows)
    return {"model": source.model_name, "source": str(source.path), "threads": threads,
            **requested,
            "clock": "cpu" if timer is time.process_time else "wall",
            "torch": torch.__version__, "rows": rows, "sizes": file_sizes,
            "dense_fp32_bytes": tensor_bytes(dense.state_dict().values()),
            "reference": "full-width fp32" if full_width is not None else "dense fp32",
            "reference_bytes": tensor_bytes((source.full_width or dense).state_dict().values())}


MISS = 0.10
"""``aswl bench`` warns when a latency budget's measured speedup is this far below."""


def _check_request(request: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """The speedup the run asked for (``budget: latency``: of the Conv/Linear layers' time;
    ``flops``/``params``: of their count) and a warning, with the numbers, for each batch
    where a latency budget's measured speedup misses it by more than :data:`MISS`."""
    if not request or not any("full_width_speedup" in row for row in rows):
        return {}
    wanted = 1.0 / max(1e-9, 1.0 - float(request["target_sparsity"]))
    if request["budget"] == "latency":
        for row in rows:
            got = row["full_width_speedup"]
            if got < (1.0 - MISS) * wanted:
                log.warning("latency budget missed at batch %d: %.2fx measured against "
                            "%.2fx requested (%.0f%% short); the table was made on another "
                            "machine, batch or thread count, or the layers the table does not "
                            "time (pooling, sums) take a larger share here", row["batch"], got,
                            wanted, 100 * (1 - got / wanted))
    return {"budget": request["budget"], "requested_speedup": wanted}


def format_bench(result: dict[str, Any]) -> str:
    """Markdown tables of :func:`bench`'s result."""
    has_ort = any("onnxruntime_ms" in row for row in result["rows"])
    lines = [f"{result['model']} ({result['source']}), torch {result['torch']}, "
             f"{result['threads']} thread(s), median {result['clock']} ms\n",
             "| batch | dense PyTorch | CSR, every pruned layer | auto (per layer) |"
             + (" onnxruntime dense |" if has_ort else "")
             + " auto vs dense | sparse layers | max abs diff |",
             "|---:|---:|---:|---:|" + ("---:|" if has_ort else "") + "---:|---:|---:|"]
    for row in result["rows"]:
        ort = f" {row['onnxruntime_ms']:.3f} |" if has_ort else ""
        lines.append(f"| {row['batch']} | {row['dense_ms']:.3f} | {row['csr_ms']:.3f} | "
                     f"{row['auto_ms']:.3f} |{ort} {row['speedup']:.2f}x | "
                     f"{row['sparse_layers']} | {row['max_abs_diff']:.1e} |")
    if any("full_width_ms" in row for row in result["rows"]):
        wanted = result.get("requested_speedup")
        asked = f" | requested ({result['budget']})" if wanted else ""
        lines += ["", "Channel-slimmed model against the same architecture at full width "
                  "(BatchNorm folded into the convolutions on both sides):", "",
                  f"| batch | full width | slimmed (auto) | speedup{asked} |",
                  "|---:|---:|---:|---:|" + ("---:|" if wanted else "")]
        lines += [f"| {row['batch']} | {row['full_width_ms']:.3f} | {row['auto_ms']:.3f} | "
                  f"{row['full_width_speedup']:.2f}x |" + (f" {wanted:.2f}x |" if wanted else "")
                  for row in result["rows"]]
    reference = result.get("reference", "dense fp32")
    lines += ["", f"| file | bytes | vs {reference} tensors |", "|---|---:|---:|"]
    for name, size in result["sizes"].items():
        ratio = "(the reference)" if name.startswith(reference) else \
            f"{result.get('reference_bytes', result['dense_fp32_bytes']) / size:.1f}x"
        lines.append(f"| {name} | {size:,} | {ratio} |")
    return "\n".join(lines)
