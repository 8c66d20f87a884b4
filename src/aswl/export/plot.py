"""Plots: one run's picture (per-layer sparsity, training curves) and the comparison plots of
``aswl compare`` (accuracy vs sparsity, per-layer sparsity by method)."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DENSE = "dense"
"""The registered dense baseline: drawn as a reference line, not as a sparse method."""


def _label(value: float) -> str:
    return f"{value:g}"


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_run(history: list[dict[str, Any]], layers: list[dict[str, Any]],
             path: str | Path, title: str = "") -> None:
    plt = _pyplot()
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5))
    ax = axes[0][0]
    names = [row["name"] for row in layers]
    ax.bar(range(len(names)), [100 * row["sparsity"] for row in layers], color="tab:blue")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("sparsity (%)")
    ax.set_title("per-layer sparsity (exported model)")
    epochs = [h["epoch"] for h in history]
    ax = axes[0][1]
    for key, label in (("train_accuracy", "train"), ("val_accuracy", "val"),
                       ("test_accuracy", "test")):
        values = [h.get(key) for h in history]
        if any(v is not None for v in values):
            ax.plot(epochs, [100 * v if v is not None else None for v in values], label=label)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.legend()
    ax.set_title("accuracy")
    ax = axes[1][0]
    ax.plot(epochs, [100 * h["global_sparsity"] for h in history], color="tab:red")
    ax.set_xlabel("epoch")
    ax.set_ylabel("global sparsity (%)")
    ax.set_title("global sparsity")
    ax = axes[1][1]
    attention_names = sorted({k for h in history for k in (h.get("attentions") or {})})
    for name in attention_names:
        ax.plot(epochs, [(h.get("attentions") or {}).get(name) for h in history], label=name)
    if attention_names:
        ax.legend(fontsize=6, ncol=2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("attention a_l")
    ax.set_title("attentions")
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_accuracy_vs_sparsity(rows: list[dict[str, Any]], summary: list[dict[str, Any]],
                              grid: Any, path: Path, title: str = "") -> None:
    """Test accuracy against target sparsity, one line per method with std error bars; dense
    as a horizontal line with a ± std band."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5))
    sparse = [m for m in dict.fromkeys(r["method"] for r in summary) if m != DENSE]
    for method in sparse:
        points = [r for r in summary if r["method"] == method and r["accuracy_mean"] is not None]
        if not points:
            continue
        ax.errorbar([100 * r["target_sparsity"] for r in points],
                    [r["accuracy_mean"] for r in points],
                    yerr=[r["accuracy_std"] for r in points], marker="o", capsize=3,
                    label=method)
    dense = [r for r in summary if r["method"] == DENSE and r["accuracy_mean"] is not None]
    if dense:
        mean, std = dense[0]["accuracy_mean"], dense[0]["accuracy_std"]
        ax.axhline(mean, color="black", linestyle="--", linewidth=1, label="dense")
        ax.axhspan(mean - std, mean + std, color="black", alpha=0.1)
    if grid.sparsities:
        ax.set_xticks([100 * s for s in grid.sparsities],
                      [_label(100 * s) for s in grid.sparsities])
    ax.set_xlabel("target sparsity (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(title or "accuracy vs sparsity")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def plot_layer_sparsity(rows: list[dict[str, Any]], summary: list[dict[str, Any]],
                        grid: Any, path: Path, title: str = "") -> None:
    """Grouped bars: per-layer sparsity of each sparse method at one target, first seed."""
    target = grid.plot_sparsity()
    if target is None:
        return
    seed = grid.seeds[0]
    tables: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        if (row["method"] != DENSE and row["target_sparsity"] == target and row["seed"] == seed
                and row["status"] == "ok" and row.get("layers")):
            tables[row["method"]] = row["layers"]
    if not tables:
        log.warning("no finished run at sparsity %s, seed %d: layer_sparsity.png not drawn",
                    _label(target), seed)
        return
    names = list(dict.fromkeys(layer["name"] for table in tables.values() for layer in table))
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(max(7.0, 0.45 * len(names) * (1 + 0.3 * len(tables))),
                                    4.5))
    width = 0.8 / len(tables)
    for i, (method, table) in enumerate(tables.items()):
        by_name = {layer["name"]: layer["sparsity"] for layer in table}
        ax.bar([j + (i - (len(tables) - 1) / 2) * width for j in range(len(names))],
               [100 * by_name.get(name, float("nan")) for name in names], width, label=method)
    ax.axhline(100 * target, color="black", linestyle=":", linewidth=1, label="target")
    ax.set_xticks(range(len(names)), names, rotation=60, ha="right", fontsize=7)
    ax.set_ylabel("sparsity (%)")
    ax.set_ylim(0, 100)
    ax.set_title(f"{title + ': ' if title else ''}per-layer sparsity at "
                 f"{_label(100 * target)}% target, seed {seed}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
