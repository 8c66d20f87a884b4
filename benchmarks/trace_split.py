"""Trace ASWL's split during training: per-layer densities, the training loss and the
estimator's statistic, every few steps, on the validation split of select_defaults.py.

    OMP_NUM_THREADS=1 .venv/bin/python benchmarks/trace_split.py --model resnet20:8 \\
        --sparsity 0.98 --seed 0 --epochs 2 --lr 0.1 --batch 128 --limit 15000 \\
        --set keep_every_unit=false

Every ``--every`` steps one line: the step, the mean training loss since the last line, the
global sparsity and each layer's density (%); before it, the mean and standard deviation
over those steps of each layer's estimator statistic (the band average of ``g * w``, in units
of 1e-4). This is the trace that showed why ASWL collapsed at 98% on a BatchNorm ResNet
(docs/RESULTS.md): the statistic of layers with dead channels grew by many orders of
magnitude and the split swung.

``--summary`` adds, at the end, each layer's statistic over the whole run: its mean, its
standard deviation across the attention updates, their ratio (the signal-to-noise ratio of
one update), ``-wd * w^2`` averaged over the same band weights (the value ``g * w`` takes
where a weight's loss gradient and its weight decay balance: 5e-4 from select_defaults.py,
or 2 * weight_decay when the method decays the weights itself), and the departure from that
balance, the statistic minus it, over its standard error. The standard errors treat the
updates as independent around one mean; the statistic drifts over the ramp and consecutive
updates are correlated, so they are rough: read them as orders of size.
"""

from __future__ import annotations

import argparse
from typing import Any

import torch
import yaml
from select_defaults import run

from aswl.data import build_datasets
from aswl.methods.aswl import ASWL, BandEstimator
from aswl.sparse import dense_weight


def trace(args: argparse.Namespace, options: dict[str, Any]) -> None:
    data = build_datasets("fashion-mnist", args.root, val_fraction=1 / 6, seed=0, augment=False)
    means: list[torch.Tensor] = []  # every attention update's statistic (a new tensor each)
    decay: list[torch.Tensor] = []
    losses: list[float] = []
    shown = 0  # updates already in a printed line

    def on_start(method: ASWL) -> None:
        def record(estimator: BandEstimator, statistic: torch.Tensor) -> None:
            means.append(statistic)
            if args.summary:
                decay.append(band_decay(estimator, options))

        method.estimator.observe(record)
        print("layers: " + " ".join(method.layers))

    def on_step(step: int, loss: float, method: ASWL) -> None:
        nonlocal shown
        losses.append(loss)
        if step % args.every:
            return
        if len(means) > shown:
            stacked = torch.stack(means[shown:])
            spread = stacked.std(0) if len(stacked) > 1 else torch.zeros_like(stacked[0])
            print("   statistic x1e4 (mean/std): " + " ".join(
                f"{1e4 * m:+.1f}/{1e4 * d:.1f}"
                for m, d in zip(stacked.mean(0).tolist(), spread.tolist())))
            shown = len(means)
        densities = method.layer_densities().values()
        print(f"{step:5d} loss {sum(losses[-args.every:]) / args.every:.3f} "
              f"sparsity {method.global_sparsity():.4f} density % "
              + " ".join(f"{100 * d:.1f}" for d in densities), flush=True)

    result = run(data, args.model, "aswl", args.sparsity, args.seed, args.epochs, options,
                 args.lr, args.batch, args.limit, on_start=on_start, on_step=on_step)
    if "error" in result:
        print(result["error"])
    else:
        print(f"validation accuracy {100 * result['val']:.2f}%")
    if args.summary:
        if means:
            summarize(list(result.get("layers", [])), torch.stack(means), torch.stack(decay))
        else:
            print("no attention update in this run: no summary")


def band_decay(estimator: BandEstimator, options: dict[str, Any]) -> torch.Tensor:
    """-wd * mean(w^2) over the weights of each layer's band that the statistic averages."""
    own = options.get("weight_decay")
    wd = 2 * float(own) if own else 5e-4  # equation 3's gradient, or select_defaults.py's SGD
    values = []
    with torch.no_grad():
        for name, module in estimator.layers.items():
            if name not in estimator.bands:
                values.append(float("nan"))
                continue
            sample = estimator.sample(name, dense_weight(module).detach()).float()
            band = estimator.in_band(name, sample.abs())
            values.append(-wd * float((sample * sample)[band].mean()) if band.any()
                          else float("nan"))
    return torch.tensor(values)


def summarize(sparsity: list[float], stats: torch.Tensor, decay: torch.Tensor) -> None:
    """One line per layer: the statistic over all attention updates (units of 1e-6)."""
    count = stats.shape[0]
    departure = stats - decay
    mean, spread = stats.mean(0), stats.std(0) if count > 1 else torch.zeros(stats.shape[1])
    gap, gap_spread = departure.mean(0), (departure.std(0) if count > 1
                                          else torch.zeros(stats.shape[1]))
    print(f"summary over {count} attention updates (statistic x1e6): layer, final sparsity %, "
          "mean, std, one-update SNR, -wd*w^2, departure (mean - decay term)/standard error")
    for i in range(stats.shape[1]):
        snr = float(mean[i] / spread[i]) if spread[i] > 0 else float("nan")
        z = float(gap[i] / gap_spread[i]) * count ** 0.5 if gap_spread[i] > 0 else float("nan")
        final = f"{sparsity[i]:.1f}" if i < len(sparsity) else "-"
        print(f"  {i:3d} {final:>5} {1e6 * mean[i]:+9.2f} {1e6 * spread[i]:8.2f} {snr:+6.2f} "
              f"{1e6 * float(decay[:, i].nanmean()):+9.2f} {z:+6.1f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default="resnet20:8", help="NAME, NAME:WIDTH or bnnet")
    parser.add_argument("--sparsity", type=float, default=0.98)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--limit", type=int, default=15000, help="training images (all: 0)")
    parser.add_argument("--every", type=int, default=20, help="steps between lines")
    parser.add_argument("--summary", action="store_true",
                        help="each layer's statistic over the whole run, at the end")
    parser.add_argument("--root", default=None, help="Fashion-MNIST folder (default: system)")
    parser.add_argument("--set", nargs="*", default=[], metavar="KEY=VALUE",
                        help="ASWL options, e.g. keep_every_unit=false")
    args = parser.parse_args()
    args.limit = args.limit or None
    options = {}
    for item in args.set:
        key, sep, value = item.partition("=")
        if not sep:
            parser.error(f"--set {item!r}: expected KEY=VALUE")
        options[key] = yaml.safe_load(value)
    torch.set_num_threads(1)
    trace(args, options)


if __name__ == "__main__":
    main()
