"""Channel mode on the models users bring: torchvision and timm classification models (random
init), aswl's channel mode against Torch-Pruning at the same FLOPs reduction.

For each model: aswl (``structure='channel'``, ``budget='flops'``) is attached, trained a few
SGD steps on random data (3x64x64, batch 8), finalised and exported; Torch-Pruning
(``MetaPruner``, group magnitude importance, the classifier ignored) prunes the same model
until its FLOPs are at most ``1/reduction`` of the dense ones. Reported per method: whether it
works (a thin model whose eval outputs equal the masked model's for aswl; any finite model
for Torch-Pruning), the FLOPs and parameter cut measured on the exported model with
``torch.utils.flop_counter``, the measured speedup (eval, one thread, median of interleaved
runs at batch 8 and 64) and, for aswl, the training step against a plain copy (interleaved).
A model aswl refuses at attach is reported with the reason.

torchvision's PyPI wheel does not import beside the CPU torch this project pins; its model
zoo is pure Python and does import when its two C++ op schemas are defined first, which this
script does (put an unpacked torchvision/timm on PYTHONPATH, e.g. ``pip download --no-deps
torchvision timm`` and unzip).

    PYTHONPATH=src:/path/to/zoo python benchmarks/channel_zoo.py --out zoo.jsonl
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
import traceback
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

import aswl
from aswl.export.sparse_modules import interleaved_ms

MODELS = ["resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "vgg11_bn",
          "mnasnet0_5", "efficientnet_b0", "timm:efficientnet_b0", "densenet121",
          "regnet_y_400mf", "resnext50_32x4d", "squeezenet1_1", "convnext_tiny", "vit_b_16",
          "shufflenet_v2_x0_5", "unet"]


def import_torchvision() -> Any:
    try:
        lib = torch.library.Library("torchvision", "DEF")
        lib.define("nms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
        lib.define("qnms(Tensor dets, Tensor scores, float iou_threshold) -> Tensor")
    except RuntimeError:
        pass  # defined already
    import torchvision.models

    return torchvision.models


class UNet(nn.Module):
    """A small U-Net classifier: two down steps, ConvTranspose up-sampling, cat skips."""

    def __init__(self, classes: int = 10, width: int = 16) -> None:
        super().__init__()

        def block(cin: int, cout: int) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False),
                                 nn.BatchNorm2d(cout), nn.ReLU())

        self.down1, self.down2 = block(3, width), block(width, 2 * width)
        self.bottom = block(2 * width, 4 * width)
        self.up2 = nn.ConvTranspose2d(4 * width, 2 * width, 2, stride=2)
        self.dec2 = block(4 * width, 2 * width)
        self.up1 = nn.ConvTranspose2d(2 * width, width, 2, stride=2)
        self.dec1 = block(2 * width, width)
        self.head = nn.Conv2d(width, classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d1 = self.down1(x)
        d2 = self.down2(F.max_pool2d(d1, 2))
        b = self.bottom(F.max_pool2d(d2, 2))
        u2 = self.dec2(torch.cat([self.up2(b), d2], 1))
        u1 = self.dec1(torch.cat([self.up1(u2), d1], 1))
        return self.head(u1).mean((2, 3))


def build(name: str) -> nn.Module:
    if name == "unet":
        return UNet()
    if name.startswith("timm:"):
        import_torchvision()
        import timm

        return timm.create_model(name[5:], num_classes=10)
    models = import_torchvision()
    if name == "vit_b_16":
        return models.vit_b_16(num_classes=10, image_size=64)
    return getattr(models, name)(num_classes=10)


def flops_params(model: nn.Module, x: torch.Tensor) -> tuple[float, int]:
    model.eval()
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(x)
    return float(counter.get_total_flops()), sum(p.numel() for p in model.parameters())


def speed(dense: nn.Module, thin: nn.Module, batches: list[int], repeats: int) -> dict[str, float]:
    out = {}
    dense.eval()
    thin.eval()
    for batch in batches:
        x = torch.randn(batch, 3, 64, 64)
        with torch.no_grad():
            ms = interleaved_ms({"dense": lambda x=x: dense(x), "thin": lambda x=x: thin(x)},
                                repeats)
        out[f"speedup_b{batch}"] = ms["dense"] / ms["thin"]
    return out


def train_aswl(name: str, args: argparse.Namespace, x: torch.Tensor,
               y: torch.Tensor, method_name: str = "aswl") -> dict[str, Any]:
    torch.manual_seed(args.seed)
    model = build(name)
    dense = copy.deepcopy(model)
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    start = time.perf_counter()
    try:
        method = aswl.sparsify(model, optimizer, total_steps=args.steps, method=method_name,
                               structure="channel", budget="flops",
                               target_sparsity=1 - 1 / args.reduction, example_inputs=x[:1])
    except aswl.methods.ConfigError as err:
        return {"works": "refused at attach", "reason": str(err)[:300]}
    plain_optimizer = torch.optim.SGD(dense.parameters(), lr=args.lr, momentum=0.9)

    def step(net: nn.Module, opt: torch.optim.Optimizer) -> None:
        opt.zero_grad()
        F.cross_entropy(net(x), y).backward()
        opt.step()

    for _ in range(args.steps):
        step(model, optimizer)
        loss = F.cross_entropy(model(x), y).detach()
        if not math.isfinite(float(loss)):
            return {"works": "NaN loss"}
    method.finalize()
    dense.train()
    # the training step after the ramp (masks frozen), against a plain copy
    ms = interleaved_ms({"plain": lambda: step(dense, plain_optimizer),
                         "aswl": lambda: step(model, optimizer)}, 5)
    try:
        thin = method.export()
    except Exception as err:  # report, do not stop the table
        return {"works": f"export failed: {type(err).__name__}: {str(err)[:200]}"}
    return {"works": "yes", "thin": thin, "dense": dense, "step_overhead": ms["aswl"] / ms["plain"],
            "reported_cut": method.global_sparsity(), "refused": len(method.refused),
            "seconds": time.perf_counter() - start}


def prune_tp(name: str, args: argparse.Namespace, x: torch.Tensor) -> dict[str, Any]:
    import torch_pruning as tp

    torch.manual_seed(args.seed)
    model = build(name).eval()
    dense = copy.deepcopy(model)
    target = flops_params(model, x[:1])[0] / args.reduction
    heads = [m for m in model.modules() if isinstance(m, nn.Linear) and m.out_features == 10]
    heads += [m for m in model.modules() if isinstance(m, nn.Conv2d) and m.out_channels == 10]
    try:
        pruner = tp.pruner.MetaPruner(model, x[:1],
                                      importance=tp.importance.GroupMagnitudeImportance(),
                                      pruning_ratio=0.9, iterative_steps=90,
                                      ignored_layers=heads)
        for _ in range(90):
            pruner.step()
            if flops_params(model, x[:1])[0] <= target:
                break
        with torch.no_grad():
            out = model(x)
        if out.shape != (len(x), 10) or not torch.isfinite(out).all():
            return {"works": f"wrong output {tuple(out.shape)}"}
    except Exception as err:
        return {"works": f"failed: {type(err).__name__}: {str(err)[:160]}"}
    return {"works": "yes", "thin": model, "dense": dense}


def measure(row: dict[str, Any], x: torch.Tensor, args: argparse.Namespace) -> dict[str, Any]:
    thin, dense = row.pop("thin", None), row.pop("dense", None)
    if thin is None:
        return row
    f0, p0 = flops_params(dense, x[:1])
    f1, p1 = flops_params(thin, x[:1])
    row.update(flops_cut=1 - f1 / f0, params_cut=1 - p1 / p0,
               **speed(dense, thin, args.batches, args.repeats))
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--reduction", type=float, default=2.0)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.01)
    parser.add_argument("--batches", default="8,64")
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tools", default="aswl,torch_pruning",
                        help="torch_pruning and/or aswl channel methods (aswl, l1_filter, ...)")
    parser.add_argument("--out", default=None, help="append one JSON line per (model, tool)")
    args = parser.parse_args()
    args.batches = [int(b) for b in args.batches.split(",")]
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    x, y = torch.randn(8, 3, 64, 64), torch.randint(0, 10, (8,))
    print(f"{'model':22} {'tool':14} {'works':18} {'reported':>8} {'FLOPs cut':>9} "
          f"{'params cut':>10} "
          + " ".join(f"{'b' + str(b):>6}" for b in args.batches) + f" {'step':>6}")
    for name in args.models.split(","):
        for tool in args.tools.split(","):
            try:
                row = prune_tp(name, args, x) if tool == "torch_pruning" else \
                    train_aswl(name, args, x, y, tool)
                row = measure(row, x, args)
            except Exception as err:  # a benchmark row, not a crash of the table
                row = {"works": f"crashed: {type(err).__name__}: {err}"[:200],
                       "trace": traceback.format_exc()[-600:]}
            row = {"model": name, "tool": tool, "reduction": args.reduction,
                   "seed": args.seed, "steps": args.steps, **row}
            cells = " ".join(f"{row[f'speedup_b{b}']:6.2f}" if f"speedup_b{b}" in row
                             else f"{'-':>6}" for b in args.batches)
            print(f"{name:22} {tool:14} {str(row['works'])[:18]:18} "
                  f"{row.get('reported_cut', float('nan')):8.3f} "
                  f"{row.get('flops_cut', float('nan')):9.3f} "
                  f"{row.get('params_cut', float('nan')):10.3f} {cells} "
                  f"{row.get('step_overhead', float('nan')):6.2f}", flush=True)
            if args.out:
                with open(args.out, "a") as handle:
                    handle.write(json.dumps(row) + "\n")


if __name__ == "__main__":
    main()
