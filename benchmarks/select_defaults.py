"""Choose the target variant's defaults on a validation split (never the test set).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/select_defaults.py --out runs/select.jsonl \\
        --jobs '[["bnnet", "aswl", 0.9, 0, 2, {"mask_interval": 16}, 0.05, 64, 12000]]'

Each job is ``[model, method, sparsity, seed, epochs, method_options, lr, batch, limit]``
(the last three optional: lr 0.05, batch 64, all 50,000 training images). Full Fashion-MNIST
(the IDX files in /usr/share/datasets/fashion-mnist, or data.root's default) is split into
50,000 training and 10,000 validation images (stratified, seed 0). Each job is one run of the
library's trainer (``aswl.train.Trainer``, with callbacks for the step hooks) scored on the
validation images: SGD with Nesterov momentum 0.9, cosine decay, weight decay 5e-4 on the
weights the method does not decay itself, no augmentation, ``limit`` images drawn afresh each
epoch (``data.epoch_samples``); the batches' order depends on the seed only. ``model`` is a
registered model (``NAME:W`` passes ``width=W``, e.g. ``resnet20:8``) or ``bnnet``: a small
BatchNorm CNN with a residual block and a depthwise convolution, the kind of model on which the
old cadence (masks every 16 steps) collapsed. One JSON line per job: validation accuracy before
and after ``finalize()``, the global and per-layer sparsity, seconds.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from aswl.checks import build_config
from aswl.config import Config
from aswl.data import Datasets, build_datasets
from aswl.models import list_models, register_model
from aswl.train import Callback, Trainer, TrainingError


class BNNet(nn.Module):
    """Conv-BN stem, a residual block (strided conv, depthwise, pointwise, 1x1 shortcut), a
    strided conv, global pooling and a Linear head: 7 prunable layers, BatchNorm after each."""

    def __init__(self, width: int = 16) -> None:
        super().__init__()
        w = width
        self.conv1 = nn.Conv2d(1, w, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(w)
        self.conv2 = nn.Conv2d(w, 2 * w, 3, stride=2, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(2 * w)
        self.dw = nn.Conv2d(2 * w, 2 * w, 3, padding=1, groups=2 * w, bias=False)
        self.bn3 = nn.BatchNorm2d(2 * w)
        self.pw = nn.Conv2d(2 * w, 2 * w, 1, bias=False)
        self.bn4 = nn.BatchNorm2d(2 * w)
        self.short = nn.Conv2d(w, 2 * w, 1, stride=2, bias=False)
        self.bns = nn.BatchNorm2d(2 * w)
        self.conv3 = nn.Conv2d(2 * w, 4 * w, 3, stride=2, padding=1, bias=False)
        self.bn5 = nn.BatchNorm2d(4 * w)
        self.fc = nn.Linear(4 * w, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(x)))
        y = F.relu(self.bn3(self.dw(y)))
        y = self.bn4(self.pw(y))
        x = F.relu(y + self.bns(self.short(x)))
        x = F.relu(self.bn5(self.conv3(x)))
        return self.fc(F.adaptive_avg_pool2d(x, 1).flatten(1))


def model_fields(model_name: str) -> tuple[str, dict[str, Any]]:
    """``bnnet``, a registered model, or ``NAME:W`` (the registered model with ``width=W``)
    -> the config's ``model`` and ``model_args``."""
    name, _, width = model_name.rpartition(":")  # e.g. "resnet20:8": ResNet-20 at width 8
    if not width.isdigit():  # "tv:resnet18" and plain names carry no width
        name, width = model_name, ""
    return name, ({"width": int(width)} if width else {})


def bnnet(num_classes: int = 10, input_shape: tuple[int, ...] = (1, 28, 28)) -> nn.Module:
    """The BatchNorm CNN of this script (10 classes, 1x28x28 inputs)."""
    return BNNet()


if "bnnet" not in list_models():  # registered once, also when this file is loaded again
    register_model("bnnet", input_shape=(1, 28, 28))(bnnet)


def job_config(model_name: str, method: str, sparsity: float, seed: int, epochs: int,
               options: dict[str, Any], lr: float, batch: int, limit: int | None) -> Config:
    """The trainer's config of one job: SGD Nesterov, cosine, weight decay 5e-4, no
    augmentation, ``limit`` images drawn afresh each epoch (all when None)."""
    model, model_args = model_fields(model_name)
    method_options = dict(options)
    if method != "dense":
        method_options["target_sparsity"] = sparsity
    return build_config(Config, {
        "model": model, "model_args": model_args, "dataset": "fashion-mnist",
        "data": {"augment": False, "epoch_samples": limit},
        "method": {"name": method, **method_options}, "epochs": epochs, "batch_size": batch,
        "lr": lr, "momentum": 0.9, "nesterov": True, "weight_decay": 5e-4,
        "optimizer": "sgd", "lr_schedule": "cosine", "seed": seed, "progress": False,
        "log": [], "checkpoint_every": max(1, epochs)}, prefix="")


class Hooks(Callback):
    """``on_start(method)`` and ``on_step(step, loss, method)`` as trainer callbacks."""

    def __init__(self, on_start: Callable[[Any], None] | None,
                 on_step: Callable[[int, float, Any], None] | None) -> None:
        self.start, self.step = on_start, on_step

    def on_start(self, trainer: Trainer) -> None:
        if self.start is not None:
            self.start(trainer.method)

    def on_step(self, trainer: Trainer, step: int, loss: torch.Tensor) -> None:
        if self.step is not None:
            self.step(step, float(loss), trainer.method)


def run(data: Any, model_name: str, method: str, sparsity: float, seed: int, epochs: int,
        options: dict[str, Any], lr: float = 0.05, batch: int = 64,
        limit: int | None = None, on_start: Callable[[Any], None] | None = None,
        on_step: Callable[[int, float, Any], None] | None = None) -> dict[str, Any]:
    """One job, trained by the library's trainer on ``data.train`` and scored on
    ``data.val`` (the trainer's "test" set here: the real test set is never read).
    ``on_start(method)`` runs before the first step, ``on_step(step, loss, method)`` after
    each one (benchmarks/trace_split.py uses both)."""
    config = job_config(model_name, method, sparsity, seed, epochs, options, lr, batch, limit)
    split = Datasets(data.train, None, data.val, data.num_classes, data.input_shape)
    start = time.time()
    with tempfile.TemporaryDirectory() as out:
        trainer = Trainer(config, out, data=split, callbacks=[Hooks(on_start, on_step)])
        try:
            report = trainer.fit()
        except TrainingError as err:
            return {"model": model_name, "method": method, "seed": seed, "opts": options,
                    "error": f"non-finite loss in epoch {trainer.epoch} ({err})"}
    images = len(data.val)

    def fraction(accuracy: float) -> float:  # correct / images, as the lines always held it
        return round(accuracy * images) / images

    return {"model": model_name, "method": method, "sparsity": sparsity, "seed": seed,
            "opts": options, "val_before": fraction(report["test_accuracy_before_finalize"]),
            "val": fraction(report["test_accuracy"]), "global": trainer.method.global_sparsity(),
            "layers": [round(100 * r["sparsity"], 2) for r in trainer.method.layer_report()],
            "seconds": round(time.time() - start, 1)}


def start_at(split: list[float]) -> Callable[[Any], None]:
    """An ``on_start`` that sets each attention to its layer's density in ``split`` (per-layer
    sparsity, %) over the largest one: the raw densities then follow that split."""
    densities = [1.0 - value / 100.0 for value in split]
    top = max(densities)

    def on_start(method: Any) -> None:
        if len(densities) != len(method.layers):
            raise SystemExit(f"--start-split has {len(densities)} values for "
                             f"{len(method.layers)} prunable layers")
        with torch.no_grad():
            for name, density in zip(method.layers, densities):
                method.masks[name].attention.fill_(max(method.learner.floor, density / top))
    return on_start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", required=True,
                        help="a JSON list of jobs, or the path of a .json file holding one")
    parser.add_argument("--out", required=True, help="JSON lines file the results append to")
    parser.add_argument("--root", default=None, help="Fashion-MNIST folder (default: system)")
    parser.add_argument("--start-split", default=None,
                        help="ASWL jobs: a JSON list of per-layer sparsities (%%); the "
                             "attentions start proportional to those densities (with "
                             "attention_lr 0 and prior uniform they stay: a fixed split)")
    args = parser.parse_args()
    torch.set_num_threads(1)
    text = open(args.jobs).read() if args.jobs.endswith(".json") else args.jobs
    data = build_datasets("fashion-mnist", args.root, val_fraction=1 / 6, seed=0,
                          augment=False)
    split = None if args.start_split is None else json.loads(args.start_split)
    for job in json.loads(text):
        result = run(data, *job, on_start=None if split is None else start_at(split))
        if split is not None:
            result["start_split"] = split
        print(json.dumps(result), flush=True)
        with open(args.out, "a") as handle:
            handle.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
