"""Choose the target variant's defaults on a validation split (never the test set).

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/select_defaults.py --out runs/select.jsonl \\
        --jobs '[["bnnet", "aswl", 0.9, 0, 2, {"mask_interval": 16}, 0.05, 64, 12000]]'

Each job is ``[model, method, sparsity, seed, epochs, method_options, lr, batch, limit]``
(the last three optional: lr 0.05, batch 64, all 50,000 training images). Full Fashion-MNIST
(the IDX files in /usr/share/datasets/fashion-mnist, or data.root's default) is split into
50,000 training and 10,000 validation images (stratified, seed 0); SGD with Nesterov momentum
0.9, cosine decay, weight decay 5e-4 on the weights the method does not decay itself; the
batches' order depends on the seed only. ``model`` is a registered model (``NAME:W`` passes
``width=W``, e.g. ``resnet20:8``) or ``bnnet``: a small
BatchNorm CNN with a residual block and a depthwise convolution, the kind of model on which the
old cadence (masks every 16 steps) collapsed. One JSON line per job: validation accuracy before
and after ``finalize()``, the global and per-layer sparsity, seconds.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

import aswl
from aswl.data import build_datasets
from aswl.models import create_model
from aswl.train.step import training_step


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


def build_model(model_name: str) -> nn.Module:
    """``bnnet``, a registered model, or ``NAME:W`` (the registered model with ``width=W``)."""
    name, _, width = model_name.rpartition(":")  # e.g. "resnet20:8": ResNet-20 at width 8
    if not width.isdigit():  # "tv:resnet18" and plain names carry no width
        name, width = model_name, ""
    if name == "bnnet":
        return BNNet()
    return create_model(name, 10, (1, 28, 28), **({"width": int(width)} if width else {}))


@torch.no_grad()
def accuracy(model: nn.Module, dataset: Any, batch: int = 1000) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(dataset.images), batch):
        logits = model(dataset.images[start:start + batch])
        correct += int((logits.argmax(1) == dataset.labels[start:start + batch]).sum())
    model.train()
    return correct / len(dataset.images)


def run(data: Any, model_name: str, method: str, sparsity: float, seed: int, epochs: int,
        options: dict[str, Any], lr: float = 0.05, batch: int = 64,
        limit: int | None = None, on_start: Callable[[Any], None] | None = None,
        on_step: Callable[[int, float, Any], None] | None = None) -> dict[str, Any]:
    """One job. ``on_start(method)`` runs before the first step, ``on_step(step, loss,
    method)`` after each one (benchmarks/trace_split.py uses both)."""
    torch.manual_seed(seed)
    train = data.train
    count = len(train.images) if limit is None else limit
    model = build_model(model_name)
    total = epochs * math.ceil(count / batch)
    kwargs = dict(options)
    if method != "dense":
        kwargs["target_sparsity"] = sparsity
    sparse = aswl.create_method(method, model, total_steps=total, **kwargs)
    decayed = {id(p) for p in sparse.decayed_parameters()}
    params = sparse.weight_parameters()
    optimizer = torch.optim.SGD(
        [{"params": [p for p in params if id(p) not in decayed], "weight_decay": 5e-4},
         {"params": [p for p in params if id(p) in decayed], "weight_decay": 0.0}],
        lr=lr, momentum=0.9, nesterov=True)
    if on_start is not None:
        on_start(sparse)
    step, start = 0, time.time()
    for epoch in range(epochs):
        generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
        order = torch.randperm(len(train.images), generator=generator)[:count]
        for first in range(0, count, batch):
            index = order[first:first + batch]
            for group in optimizer.param_groups:
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            loss = training_step(model, sparse, optimizer, train.images[index],
                                 train.labels[index]).loss
            step += 1
            if on_step is not None:
                on_step(step, float(loss), sparse)
            if not math.isfinite(float(loss)):
                return {"model": model_name, "method": method, "seed": seed, "opts": options,
                        "error": f"non-finite loss in epoch {epoch}"}
    before = accuracy(model, data.val)
    sparse.finalize()
    return {"model": model_name, "method": method, "sparsity": sparsity, "seed": seed,
            "opts": options, "val_before": before, "val": accuracy(model, data.val),
            "global": sparse.global_sparsity(),
            "layers": [round(100 * r["sparsity"], 2) for r in sparse.layer_report()],
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
                method.masks[name].attention.fill_(max(method.attention_floor, density / top))
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
