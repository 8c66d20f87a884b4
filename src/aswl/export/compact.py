"""A compact sparse file for an exported model, and the byte counts the report gives.

Each pruned weight tensor is stored as its nonzero values plus either a packed bitmap of the
kept positions (1 bit per weight) or int32 flat indices, whichever is smaller; every other
tensor is stored as is. The file is safetensors: it loads without executing code.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import Tensor, nn


class ExportError(RuntimeError):
    """An exported file is missing, corrupt, or does not match the model."""


def _encode(tensor: Tensor) -> dict[str, Tensor]:
    flat = tensor.detach().reshape(-1).cpu()
    kept = flat != 0
    values = flat[kept].contiguous()
    count = int(kept.sum())
    if count * 4 < (flat.numel() + 7) // 8:
        return {"values": values, "indices": torch.nonzero(kept).reshape(-1).to(torch.int32)}
    bits = np.packbits(kept.numpy().astype(np.uint8))
    return {"values": values, "bitmap": torch.from_numpy(bits)}


def sparse_tensors(model: nn.Module, sparse_names: Iterable[str]) -> tuple[dict[str, Tensor],
                                                                           dict[str, str]]:
    """The compact tensors and shape metadata of ``model``'s state."""
    sparse_names = set(sparse_names)
    tensors: dict[str, Tensor] = {}
    shapes: dict[str, list[int]] = {}
    for key, value in model.state_dict().items():
        if key in sparse_names:
            for part, data in _encode(value).items():
                tensors[f"{key}::{part}"] = data
            shapes[key] = list(value.shape)
        else:
            tensors[key] = value.detach().cpu().contiguous()
    return tensors, {"aswl_sparse_shapes": json.dumps(shapes)}


def tensor_bytes(tensors: Iterable[Tensor]) -> int:
    return sum(t.numel() * t.element_size() for t in tensors)


def prunable_weight_keys(layer_names: Iterable[str]) -> list[str]:
    return [f"{name}.weight" if name else "weight" for name in layer_names]


def save_compact(model: nn.Module, layer_names: Iterable[str], path: str | Path) -> int:
    """Write the compact file; returns its payload bytes (tensor data, no header)."""
    tensors, metadata = sparse_tensors(model, prunable_weight_keys(layer_names))
    save_file(tensors, str(path), metadata=metadata)
    return tensor_bytes(tensors.values())


def load_compact(model: nn.Module, path: str | Path) -> nn.Module:
    """Fill ``model`` (same architecture, plain layers) from a compact file."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"compact model file {str(path)!r} not found")
    try:
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
        shapes = json.loads(metadata["aswl_sparse_shapes"])
    except (SafetensorError, KeyError, json.JSONDecodeError, OSError) as err:
        raise ExportError(f"{str(path)!r} is not a readable aswl compact file: {err}") from err
    state = {k: v for k, v in tensors.items() if "::" not in k}
    for key, shape in shapes.items():
        numel = int(np.prod(shape))
        values = tensors[f"{key}::values"]
        dense = torch.zeros(numel, dtype=values.dtype)
        if f"{key}::indices" in tensors:
            dense[tensors[f"{key}::indices"].long()] = values
        else:
            bits = np.unpackbits(tensors[f"{key}::bitmap"].numpy())[:numel].astype(bool)
            dense[torch.from_numpy(bits)] = values
        state[key] = dense.reshape(shape)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ExportError(f"{str(path)!r} does not match the model: {err}") from err
    return model


def save_dense(model: nn.Module, path: str | Path) -> int:
    """``model.safetensors``: every tensor, zeros in place; returns payload bytes."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    save_file(tensors, str(path))
    return tensor_bytes(tensors.values())
