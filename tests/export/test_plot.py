"""Plots: integer epoch ticks, 50+ layers readable (a heatmap), titles inside the canvas;
the summary says "n = 1" for one seed instead of a zero spread."""

from __future__ import annotations

import pytest

pytest.importorskip("matplotlib")

from aswl.compare import format_summary, summarize  # noqa: E402
from aswl.export.plot import MAX_LEGEND, run_figure  # noqa: E402


def history(layers: int, epochs: int) -> tuple[list[dict], list[dict]]:
    names = [f"stage{i // 8}.block{i % 8}.conv{i % 2 + 1}" for i in range(layers)]
    records = [{"epoch": e, "train_accuracy": 0.5 + e / 100, "test_accuracy": 0.5 + e / 90,
                "global_sparsity": min(0.9, 0.2 * e),
                "attentions": {n: 0.5 + 0.01 * ((i + e) % 20) for i, n in enumerate(names)}}
               for e in range(1, epochs + 1)]
    rows = [{"name": n, "sparsity": 0.9} for n in names]
    return records, rows


def inside(fig, artist) -> bool:
    renderer = fig.canvas.get_renderer()
    box, canvas = artist.get_window_extent(renderer), fig.bbox
    return (box.x0 >= canvas.x0 - 1 and box.x1 <= canvas.x1 + 1 and box.y0 >= canvas.y0 - 1
            and box.y1 <= canvas.y1 + 1)


@pytest.mark.parametrize("layers,epochs", [(3, 2), pytest.param(56, 7, marks=pytest.mark.slow)])
def test_run_figure_scales(layers: int, epochs: int) -> None:
    import matplotlib.pyplot as plt

    records, rows = history(layers, epochs)
    title = "aswl / resnet56_with_a_very_long_model_name / cifar10, seed 0, target 0.95 " * 2
    fig = run_figure(records, rows, title)
    fig.canvas.draw()
    try:
        epoch_axes = [ax for ax in fig.axes if ax.get_xlabel() == "epoch"]
        assert len(epoch_axes) == 3
        for ax in epoch_axes:  # integer ticks only
            ticks = [t for t in ax.get_xticks() if ax.get_xlim()[0] <= t <= ax.get_xlim()[1]]
            assert ticks and all(float(t).is_integer() for t in ticks), ticks
        attention_ax = fig.axes[3]
        legend = attention_ax.get_legend()
        if layers > MAX_LEGEND:  # a heatmap with one row per layer, no 56-entry legend
            assert legend is None and len(attention_ax.images) == 1
            assert attention_ax.images[0].get_array().shape == (layers, epochs)
        else:
            assert legend is not None and len(legend.get_texts()) == layers
            colors = {line.get_color() for line in attention_ax.get_lines()}
            assert len(colors) == layers  # no repeated colour
        assert inside(fig, fig._suptitle)
        for ax in fig.axes:
            assert inside(fig, ax.title)
    finally:
        plt.close(fig)


def test_summary_says_n_1_for_one_seed() -> None:
    rows = [{"method": "aswl", "target_sparsity": 0.9, "seed": s, "status": "ok",
             "test_accuracy": a, "global_sparsity": 0.9} for s, a in ((0, 0.9), (1, 0.8))]
    rows.append({"method": "gmp", "target_sparsity": 0.9, "seed": 0, "status": "ok",
                 "test_accuracy": 0.85, "global_sparsity": 0.9})
    text = format_summary(summarize(rows))
    assert "| gmp | 90 | 85.00 (n = 1) |" in text
    assert "85.00 ± 7.07" in text and "± 0.00" not in text
