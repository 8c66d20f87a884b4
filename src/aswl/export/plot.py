"""The run's picture: per-layer sparsity and the training curves."""

from __future__ import annotations

from pathlib import Path
from typing import Any


def plot_run(history: list[dict[str, Any]], layers: list[dict[str, Any]],
             path: str | Path, title: str = "") -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

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
