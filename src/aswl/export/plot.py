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


def _wrap(text: str, width: int) -> str:
    """Break a long title into lines so it stays inside the figure."""
    import textwrap

    return "\n".join(textwrap.wrap(text, max(20, width))) or text


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


MAX_LEGEND = 10
"""More layers than this: the attentions are drawn as a layer x epoch heatmap, not lines."""


def _integer_epochs(ax: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    ax.xaxis.set_major_locator(MaxNLocator(integer=True))


def _tick_size(count: int) -> float:
    """Font size of one label per layer: smaller as layers grow, readable down to 4 pt."""
    return max(4.0, min(7.0, 280.0 / max(1, count)))


def run_figure(history: list[dict[str, Any]], layers: list[dict[str, Any]],
               title: str = "") -> Any:
    """The run's 2 x 2 figure: per-layer sparsity, accuracy, global sparsity, attentions.

    Epoch axes have integer ticks. Up to MAX_LEGEND layers the attentions are lines with a
    legend beside the panel; with more, a layer x epoch heatmap (any number of layers).
    """
    plt = _pyplot()
    names = [row["name"] for row in layers]
    attention_names = list(dict.fromkeys(k for h in history for k in (h.get("attentions") or {})))
    tall = max(7.5, 4.0 + 0.09 * max(len(names), len(attention_names)))
    fig, axes = plt.subplots(2, 2, figsize=(12, tall), layout="constrained")
    ax = axes[0][0]
    ax.bar(range(len(names)), [100 * row["sparsity"] for row in layers], color="tab:blue")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=_tick_size(len(names)))
    ax.set_ylabel("sparsity (%)")
    ax.set_title("per-layer sparsity (exported model)")
    epochs = [h["epoch"] for h in history]
    ax = axes[0][1]
    for key, label in (("train_accuracy", "train"), ("val_accuracy", "val"),
                       ("test_accuracy", "test")):
        values = [h.get(key) for h in history]
        if any(v is not None for v in values):
            ax.plot(epochs, [100 * v if v is not None else None for v in values], label=label,
                    marker="o" if len(epochs) < 3 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("accuracy (%)")
    ax.legend()
    ax.set_title("accuracy")
    _integer_epochs(ax)
    ax = axes[1][0]
    ax.plot(epochs, [100 * h["global_sparsity"] for h in history], color="tab:red",
            marker="o" if len(epochs) < 3 else None)
    ax.set_xlabel("epoch")
    ax.set_ylabel("global sparsity (%)")
    ax.set_title("global sparsity")
    _integer_epochs(ax)
    ax = axes[1][1]
    if len(attention_names) > MAX_LEGEND:
        values = [[(h.get("attentions") or {}).get(name, float("nan")) for h in history]
                  for name in attention_names]
        image = ax.imshow(values, aspect="auto", interpolation="nearest", cmap="viridis",
                          vmin=0.0, vmax=1.0, extent=(min(epochs) - 0.5, max(epochs) + 0.5,
                                                      len(attention_names) - 0.5, -0.5))
        ax.set_yticks(range(len(attention_names)), attention_names,
                      fontsize=_tick_size(len(attention_names)))
        fig.colorbar(image, ax=ax, label="attention a_l")
        ax.set_title("attentions (layer x epoch)")
    else:
        colors = plt.get_cmap("tab10")
        for i, name in enumerate(attention_names):
            ax.plot(epochs, [(h.get("attentions") or {}).get(name) for h in history],
                    label=name, color=colors(i), marker="o" if len(epochs) < 3 else None)
        if attention_names:
            ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
        ax.set_ylabel("attention a_l")
        ax.set_title("attentions")
    ax.set_xlabel("epoch")
    _integer_epochs(ax)
    if title:
        fig.suptitle(_wrap(title, 100))
    return fig


def _save(fig: Any, path: str | Path, dpi: int) -> None:
    """Write the figure through the atomic writer (umask modes, no half-written file)."""
    from aswl.io import write_atomic

    fmt = Path(path).suffix.lstrip(".") or "png"
    write_atomic(path, lambda file: fig.savefig(file, dpi=dpi, format=fmt))


def plot_run(history: list[dict[str, Any]], layers: list[dict[str, Any]],
             path: str | Path, title: str = "") -> None:
    """Save :func:`run_figure` to ``path``."""
    plt = _pyplot()
    fig = run_figure(history, layers, title)
    _save(fig, path, 110)
    plt.close(fig)


def plot_accuracy_vs_sparsity(rows: list[dict[str, Any]], summary: list[dict[str, Any]],
                              grid: Any, path: Path, title: str = "") -> None:
    """Test accuracy against target sparsity, one line per method with std error bars; dense
    as a horizontal line with a ± std band."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(7, 4.5), layout="constrained")
    sparse = [m for m in dict.fromkeys(r["method"] for r in summary) if m != DENSE]
    for method in sparse:
        points = [r for r in summary if r["method"] == method and r["accuracy_mean"] is not None]
        if not points:
            continue
        ax.errorbar([100 * r["target_sparsity"] for r in points],
                    [r["accuracy_mean"] for r in points],
                    yerr=[r["accuracy_std"] or 0.0 for r in points], marker="o", capsize=3,
                    label=method)
    dense = [r for r in summary if r["method"] == DENSE and r["accuracy_mean"] is not None]
    if dense:
        mean, std = dense[0]["accuracy_mean"], dense[0]["accuracy_std"]
        ax.axhline(mean, color="black", linestyle="--", linewidth=1, label="dense")
        if std:  # one seed has no spread
            ax.axhspan(mean - std, mean + std, color="black", alpha=0.1)
    if grid.sparsities:
        ax.set_xticks([100 * s for s in grid.sparsities],
                      [_label(100 * s) for s in grid.sparsities])
    ax.set_xlabel("target sparsity (%)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(_wrap(title or "accuracy vs sparsity", 70))
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, path, 120)
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
    width_in = min(40.0, max(7.0, 0.45 * len(names) * (1 + 0.3 * len(tables))))
    fig, ax = plt.subplots(figsize=(width_in, 5.0), layout="constrained")
    width = 0.8 / len(tables)
    for i, (method, table) in enumerate(tables.items()):
        by_name = {layer["name"]: layer["sparsity"] for layer in table}
        ax.bar([j + (i - (len(tables) - 1) / 2) * width for j in range(len(names))],
               [100 * by_name.get(name, float("nan")) for name in names], width, label=method)
    ax.axhline(100 * target, color="black", linestyle=":", linewidth=1, label="target")
    ax.set_xticks(range(len(names)), names, rotation=90, fontsize=_tick_size(len(names)))
    ax.set_ylabel("sparsity (%)")
    ax.set_ylim(0, 100)
    ax.set_title(_wrap(f"{title + ': ' if title else ''}per-layer sparsity at "
                       f"{_label(100 * target)}% target, seed {seed}", int(10 * width_in)))
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    _save(fig, path, 120)
    plt.close(fig)
