"""Per-layer sparsity, FLOPs and storage of an exported (plain) model."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from aswl.sparse.flops import layer_flops

__all__ = ["layer_flops", "layer_table"]


def layer_table(model: nn.Module, layer_names: list[str], input_shape: tuple[int, ...],
                attentions: dict[str, float],
                reference: nn.Module | None = None) -> list[dict[str, Any]]:
    """One row per prunable layer of the exported model, counted from its actual zeros.

    ``reference``: the full-width model the export came from; its sizes and FLOPs are the
    dense ones (a channel-slimmed export has thinner layers than it)."""
    flops = layer_flops(model, layer_names, input_shape)
    dense_flops = flops if reference is None else layer_flops(reference, layer_names,
                                                               input_shape)
    rows = []
    for name in layer_names:
        weight = model.get_submodule(name).weight.detach()
        full = weight if reference is None else reference.get_submodule(name).weight
        numel = full.numel()
        nonzero = int(torch.count_nonzero(weight))
        rows.append({
            "name": name, "numel": numel, "nonzero": nonzero, "sparsity": 1 - nonzero / numel,
            "attention": attentions.get(name), "flops_dense": dense_flops.get(name, 0),
            "flops_sparse": int(round(flops.get(name, 0) * nonzero / weight.numel())),
        })
    return rows


def format_table(rows: list[dict[str, Any]]) -> str:
    """A fixed-width text table of the layer rows."""
    head = f"{'layer':<32} {'weights':>10} {'nonzero':>10} {'sparsity':>9} {'attention':>9} " \
           f"{'MFLOPs':>9}"
    lines = [head, "-" * len(head)]
    for row in rows:
        attention = "-" if row["attention"] is None else f"{row['attention']:.3f}"
        lines.append(f"{row['name'][:32]:<32} {row['numel']:>10,} {row['nonzero']:>10,} "
                     f"{row['sparsity']:>9.2%} {attention:>9} "
                     f"{row['flops_sparse'] / 1e6:>9.3f}")
    total = sum(r["numel"] for r in rows)
    nonzero = sum(r["nonzero"] for r in rows)
    flops = sum(r["flops_sparse"] for r in rows)
    lines.append(f"{'total':<32} {total:>10,} {nonzero:>10,} "
                 f"{1 - nonzero / max(1, total):>9.2%} {'':>9} {flops / 1e6:>9.3f}")
    return "\n".join(lines)
