"""The compact sparse file of an exported model, and the byte counts the report gives.

Format v2 (written by default): each pruned weight tensor is stored as its nonzero values plus
its kept positions, coded as a bitmap, delta-coded gaps (uint8/uint16 with an escape) or
Golomb-Rice coded gaps, each raw or zlib/lzma compressed: the smallest is chosen per tensor
(:mod:`aswl.export.codec`). Values may be quantized (fp16, bf16, int8, k-means 4 to 8 bits);
then the other float tensors (biases, BatchNorm) are stored in 16 bits. The metadata holds a
version field and a JSON layout.

Format v1 (still read): fp32 values plus a packed bitmap or int32 indices.

Both are safetensors files with JSON-string metadata: loading never executes code. Loading
checks the header and every declaration before decoding (:mod:`aswl.export.verify`), and the
``aswl_sha256`` metadata (over the metadata and the tensors) of files written since it exists;
older v2 files carry ``aswl_crc32`` over the tensor data only and still load (their metadata is
checked for consistency but not checksummed), older v1 files have no checksum.
"""

from __future__ import annotations

import json
import logging
import zlib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save as safetensors_bytes
from torch import Tensor, nn

from aswl.checks import ConfigError
from aswl.export.codec import (
    QUANTIZATIONS,
    CodecError,
    compress,
    decode_positions,
    decompress,
    dequantize,
    encode_positions,
    quantize,
)
from aswl.export.verify import (
    DTYPE_NAMES,
    SHA_KEY,
    ExportError,
    Header,
    Mismatch,
    check_layout,
    check_sha256,
    check_v1,
    content_sha256,
    json_field,
    read_header,
)
from aswl.finite import check_finite
from aswl.io import write_atomic
from aswl.sparse.channels import SLIM_KEY, apply_slim_record

log = logging.getLogger(__name__)

VERSION = 2
_FLOAT_VALUES = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_DTYPES = {name: getattr(torch, name) for name in DTYPE_NAMES}


def tensor_bytes(tensors: Iterable[Tensor]) -> int:
    """Payload bytes of ``tensors`` (data only, no file header)."""
    return sum(t.numel() * t.element_size() for t in tensors)


def prunable_weight_keys(layer_names: Iterable[str]) -> list[str]:
    """State-dict keys of the weights of the named layers."""
    return [f"{name}.weight" if name else "weight" for name in layer_names]


def check_quantize(mode: str | None) -> str:
    """``mode`` normalised ("none" and None mean lossless fp32), or a clear error."""
    mode = "fp32" if mode in (None, "", "none") else str(mode).lower()
    if mode not in QUANTIZATIONS:
        raise ExportError(f"unknown quantization {mode!r}: use one of none, "
                          f"{', '.join(QUANTIZATIONS[1:])}")
    return mode


def _blob(data: bytes) -> Tensor:
    return torch.frombuffer(bytearray(data), dtype=torch.uint8) if data else \
        torch.zeros(0, dtype=torch.uint8)


def _encode_tensor(key: str, value: Tensor, mode: str) -> tuple[dict[str, Tensor], dict]:
    flat = value.detach().reshape(-1).cpu().float()
    kept = (flat != 0).numpy()
    values = flat.numpy()[kept]
    candidates = []
    for desc, raw in encode_positions(kept):
        method, packed = compress(raw)
        candidates.append((len(packed), {**desc, "zip": method, "size": len(raw)}, packed))
    index_bytes, index_desc, index_data = min(candidates, key=lambda c: c[0])
    if index_desc["code"] == "dense":
        values = flat.numpy()
    tensors: dict[str, Tensor] = {f"{key}::index": _blob(index_data)}
    if mode in _FLOAT_VALUES:
        tensors[f"{key}::values"] = torch.from_numpy(values.copy()).to(_FLOAT_VALUES[mode])
        value_desc: dict[str, Any] = {"quant": mode}
    else:
        value_desc, codes, codebook = quantize(values, mode)
        method, packed = compress(codes)
        value_desc.update({"zip": method, "size": len(codes)})
        tensors[f"{key}::values"] = _blob(packed)
        if codebook is not None:
            tensors[f"{key}::codebook"] = torch.from_numpy(codebook.copy())
    layout = {"shape": list(value.shape), "dtype": str(value.dtype).replace("torch.", ""),
              "count": int(values.size), "index": index_desc, "values": value_desc}
    return tensors, layout


def compact_tensors(state: dict[str, Tensor], sparse_keys: Iterable[str],
                    quantize_mode: str | None = None) -> tuple[dict[str, Tensor], dict[str, str]]:
    """The v2 tensors and metadata of a state dict whose ``sparse_keys`` are pruned."""
    mode = check_quantize(quantize_mode)
    sparse_keys = set(sparse_keys)
    other_dtype = {"fp32": None, "fp16": torch.float16, "bf16": torch.bfloat16}.get(
        mode, torch.float16)
    tensors: dict[str, Tensor] = {}
    layout: dict[str, Any] = {}
    cast: dict[str, str] = {}
    for key, value in state.items():
        if key in sparse_keys and value.is_floating_point():
            parts, layout[key] = _encode_tensor(key, value, mode)
            tensors.update(parts)
        elif other_dtype is not None and value.is_floating_point():
            cast[key] = str(value.dtype).replace("torch.", "")
            tensors[key] = value.detach().cpu().to(other_dtype).contiguous()
        else:
            tensors[key] = value.detach().cpu().contiguous()
    metadata = {"aswl_compact_version": str(VERSION), "aswl_quantize": mode,
                "aswl_layout": json.dumps(layout), "aswl_cast": json.dumps(cast)}
    return tensors, metadata


def payload_crc32(tensors: dict[str, Tensor]) -> int:
    """CRC-32 of every tensor's bytes, in key order: the checksum of v2 files written before
    ``aswl_sha256`` (still verified when they are loaded)."""
    crc = 0
    for key in sorted(tensors):
        data = tensors[key].detach().contiguous().reshape(-1)
        crc = zlib.crc32(data.view(torch.uint8).numpy().tobytes() if data.numel() else b"", crc)
    return crc


def _legacy_tensors(state: dict[str, Tensor], sparse_keys: set[str]) -> tuple[dict, dict]:
    """Format v1: fp32 values plus a bitmap or int32 indices (kept for tests and old readers)."""
    tensors: dict[str, Tensor] = {}
    shapes: dict[str, list[int]] = {}
    for key, value in state.items():
        if key not in sparse_keys:
            tensors[key] = value.detach().cpu().contiguous()
            continue
        flat = value.detach().reshape(-1).cpu()
        kept = flat != 0
        tensors[f"{key}::values"] = flat[kept].contiguous()
        if int(kept.sum()) * 4 < (flat.numel() + 7) // 8:
            tensors[f"{key}::indices"] = torch.nonzero(kept).reshape(-1).to(torch.int32)
        else:
            bits = np.packbits(kept.numpy().astype(np.uint8))
            tensors[f"{key}::bitmap"] = torch.from_numpy(bits)
        shapes[key] = list(value.shape)
    return tensors, {"aswl_sparse_shapes": json.dumps(shapes)}


def save_compact(model: nn.Module, layer_names: Iterable[str], path: str | Path,
                 quantize: str | None = None, version: int = VERSION,
                 extra: dict[str, str] | None = None) -> int:
    """Write the compact file of ``model`` (plain layers, pruned weights exactly zero) with the
    named layers' weights coded sparse; returns its payload bytes (tensor data, no header).
    ``extra``: more metadata (a slimmed model's channel record)."""
    state = model.state_dict()
    keys = prunable_weight_keys(layer_names)
    if version == 1:
        if check_quantize(quantize) != "fp32":
            raise ExportError("format v1 stores fp32 only; use version 2 to quantize")
        tensors, metadata = _legacy_tensors(state, set(keys))
    elif version == VERSION:
        tensors, metadata = compact_tensors(state, keys, quantize)
    else:
        raise ExportError(f"unknown compact format version {version}: use 1 or 2")
    write_safetensors(tensors, {**metadata, **(extra or {})}, path)
    return tensor_bytes(tensors.values())


def write_safetensors(tensors: dict[str, Tensor], metadata: dict[str, str] | None,
                      path: str | Path) -> None:
    """Write a safetensors file with an ``aswl_sha256`` over its metadata and tensors,
    atomically and with the umask's mode (:func:`aswl.io.write_atomic`)."""
    metadata = dict(metadata or {})
    metadata[SHA_KEY] = content_sha256(tensors, metadata)
    write_atomic(path, safetensors_bytes(tensors, metadata=metadata))  # WriteError on failure


def read_safetensors(path: str | Path, what: str) -> tuple[dict[str, Tensor], dict[str, str]]:
    """Tensors and metadata of a safetensors file, or an :class:`ExportError` naming it.
    The header is checked first (:func:`~aswl.export.verify.read_header`)."""
    path = Path(path)
    read_header(path, what)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
            tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    except (SafetensorError, OSError, ValueError, RuntimeError) as err:
        raise ExportError(f"{str(path)!r} is not a readable safetensors file (truncated or "
                          f"corrupt?): {err}. Export it again") from err
    return tensors, metadata


def _decode_v1(tensors: dict[str, Tensor], metadata: dict[str, str]) -> dict[str, Tensor]:
    shapes = json.loads(metadata["aswl_sparse_shapes"])  # checked by check_v1
    state = {k: v for k, v in tensors.items() if "::" not in k}
    for key, shape in shapes.items():
        numel = int(np.prod(shape))
        values = tensors[f"{key}::values"]
        dense = torch.zeros(numel, dtype=values.dtype)
        if f"{key}::indices" in tensors:
            indices = tensors[f"{key}::indices"].long()
            if indices.numel() and not (0 <= int(indices.min()) and int(indices.max()) < numel):
                raise CodecError(f"{key}: an index is outside 0..{numel - 1}")
            dense[indices] = values
        else:
            bits = np.unpackbits(tensors[f"{key}::bitmap"].numpy())[:numel].astype(bool)
            if int(bits.sum()) != values.numel():
                raise CodecError(f"{key}: the bitmap keeps {int(bits.sum())} weights for "
                                 f"{values.numel()} values")
            dense[torch.from_numpy(bits)] = values
        state[key] = dense.reshape(shape)
    return state


def _decode_v2(tensors: dict[str, Tensor], metadata: dict[str, str]) -> dict[str, Tensor]:
    if SHA_KEY not in metadata:  # a file of an older aswl: its CRC covers the tensors only
        if "aswl_crc32" not in metadata:
            raise CodecError("it has no checksum (aswl_sha256 or aswl_crc32)")
        if int(metadata["aswl_crc32"]) != payload_crc32(tensors):
            raise CodecError("checksum mismatch: the tensor data was altered")
    layout = json.loads(metadata["aswl_layout"])
    cast = json.loads(metadata.get("aswl_cast", "{}"))
    state = {k: v for k, v in tensors.items() if "::" not in k}
    for key, dtype in cast.items():
        state[key] = state[key].to(_DTYPES[dtype])
    for key, info in layout.items():
        shape, count = [int(s) for s in info["shape"]], int(info["count"])
        numel = int(np.prod(shape))
        if not 0 <= count <= numel:
            raise CodecError(f"{key}: {count} values for {numel} weights")
        index, value_desc = info["index"], info["values"]
        raw = decompress(index["zip"], tensors[f"{key}::index"].numpy().tobytes(),
                         int(index["size"]))
        positions = decode_positions(index, raw, numel, count)
        stored = tensors[f"{key}::values"]
        if value_desc["quant"] in _FLOAT_VALUES:
            values = stored.float()
        else:
            codes = decompress(value_desc["zip"], stored.numpy().tobytes(),
                               int(value_desc["size"]))
            codebook = tensors.get(f"{key}::codebook")
            values = torch.from_numpy(dequantize(
                value_desc, codes, count, None if codebook is None else codebook.numpy()).copy())
        if values.numel() != count:
            raise CodecError(f"{key}: {values.numel()} values, expected {count}")
        dense = torch.zeros(numel, dtype=torch.float32)
        dense[torch.from_numpy(positions)] = values
        state[key] = dense.reshape(shape).to(_DTYPES[info.get("dtype", "float32")])
    return state


def compact_version(metadata: dict[str, str]) -> int | None:
    """The compact format version of a file's metadata (None: not a compact file)."""
    if "aswl_compact_version" in metadata:
        try:
            return int(metadata["aswl_compact_version"])
        except ValueError:
            return -1
    return 1 if "aswl_sparse_shapes" in metadata else None


def _check_declarations(header: Header, version: int, path: str | Path,
                        expected: dict[str, tuple[int, ...]] | None) -> None:
    """Every shape, count, code and scale a compact file declares, before any decoding."""
    try:
        if version == 1:
            check_v1(header, json_field(header.metadata, "aswl_sparse_shapes", path), expected)
        else:
            check_layout(header, json_field(header.metadata, "aswl_layout", path),
                         json_field(header.metadata, "aswl_cast", path, "{}"), expected)
    except Mismatch as err:
        raise ExportError(f"{str(path)!r} does not match the model: {err}") from None
    except ValueError as err:
        raise ExportError(f"{str(path)!r} is a corrupt aswl compact file ({err}); export it "
                          "again") from None


def load_state_file(path: str | Path, compact_only: bool = False,
                    expected: dict[str, tuple[int, ...]] | None = None) -> dict[str, Tensor]:
    """The dense state dict of a model file: a compact file (v1 or v2, pruned weights as exact
    zeros) or, unless ``compact_only``, a plain safetensors file.

    ``expected`` (key -> shape, the model's) is checked against what the file declares before
    anything is decoded; without it the weights a file may declare are bounded by its size.
    A NaN or infinite weight is a :class:`~aswl.finite.NonFiniteError` naming the tensor."""
    what = "compact model file" if compact_only else "model file"
    header = read_header(path, what)
    version = compact_version(header.metadata)
    if version is None and compact_only:
        raise ExportError(f"{str(path)!r} is a safetensors file but not an aswl compact file "
                          "(no aswl_compact_version metadata); load it as a plain model")
    if version is not None and version not in (1, VERSION):
        raise ExportError(f"{str(path)!r} is compact format v{version}; this aswl reads v1 "
                          f"and v{VERSION}: upgrade aswl")
    if version is not None:
        _check_declarations(header, version, path, expected)
    tensors, metadata = read_safetensors(path, what)
    if not check_sha256(tensors, metadata, path) and version != VERSION:
        log.info("%s has no SHA-256 (written by an older aswl or another tool): loaded "
                 "unverified", path)
    if version is None:
        state = tensors
    else:
        try:
            state = (_decode_v1 if version == 1 else _decode_v2)(tensors, metadata)
        except (CodecError, KeyError, TypeError, ValueError, IndexError, RuntimeError,
                MemoryError) as err:
            detail = f"missing {err}" if isinstance(err, KeyError) else str(err)
            raise ExportError(f"{str(path)!r} is a corrupt aswl compact file ({detail}); "
                              "export it again") from err
    check_finite(state, f"{what} {str(path)!r}")  # with or without a checksum
    return state


def load_compact_state(path: str | Path) -> dict[str, Tensor]:
    """The dense state dict of a compact file (v1 or v2), pruned weights as exact zeros."""
    return load_state_file(path, compact_only=True)


def load_compact(model: nn.Module, path: str | Path) -> nn.Module:
    """Fill ``model`` (same architecture, plain layers) from a compact file (v1 or v2)."""
    return load_weights(model, path, compact_only=True)


def file_metadata(path: str | Path) -> dict[str, str]:
    """A safetensors file's metadata (its header only); {} for a file that is not one (its
    loader then says what is wrong)."""
    try:
        with safe_open(str(path), framework="pt") as handle:
            return handle.metadata() or {}
    except (SafetensorError, OSError, ValueError):
        return {}


def load_weights(model: nn.Module, path: str | Path, compact_only: bool = False) -> nn.Module:
    """Fill ``model`` from a compact or plain safetensors file (16-bit values are cast); what
    the file declares is checked against the model's shapes before it is decoded. A file of a
    channel-slimmed model carries its channel record: the full-width ``model`` is slimmed in
    place to match first."""
    if not isinstance(model, nn.Module):
        swapped = "; the arguments are swapped: pass (model, path)" if isinstance(
            path, nn.Module) else ""
        raise TypeError(f"model (the first argument) must be a torch.nn.Module, got "
                        f"{type(model).__name__}{swapped}")
    metadata = file_metadata(path)
    if SLIM_KEY in metadata:
        try:
            apply_slim_record(model, metadata)
        except ConfigError as err:
            raise ExportError(f"{str(path)!r}: {err}") from err
    expected = {key: tuple(value.shape) for key, value in model.state_dict().items()}
    state = load_state_file(path, compact_only, expected)
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ExportError(f"{str(path)!r} does not match the model: {err}") from err
    return model


def save_dense(model: nn.Module, path: str | Path, extra: dict[str, str] | None = None) -> int:
    """``model.safetensors``: every tensor, zeros in place; returns payload bytes.
    ``extra``: metadata (a slimmed model's channel record)."""
    tensors = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    write_safetensors(tensors, extra or None, path)
    return tensor_bytes(tensors.values())


def describe_compact(path: str | Path) -> list[dict[str, Any]]:
    """One row per coded tensor of a v2 file: key, weights, kept, position code, bytes."""
    header = read_header(path, "compact model file")
    if compact_version(header.metadata) != VERSION:
        return []
    _check_declarations(header, VERSION, path, None)
    tensors, metadata = read_safetensors(path, "compact model file")
    check_sha256(tensors, metadata, path)
    rows = []
    for key, info in json.loads(metadata["aswl_layout"]).items():
        index = info["index"]
        code = index["code"] + (f"(k={index['k']})" if "k" in index else "")
        if index["zip"] != "raw":
            code += f"+{index['zip']}"
        rows.append({"key": key, "numel": int(np.prod(info["shape"])), "count": info["count"],
                     "index": code, "index_bytes": tensors[f"{key}::index"].numel(),
                     "values": info["values"]["quant"] + (f"{info['values'].get('bits', '')}"),
                     "value_bytes": tensor_bytes([tensors[f"{key}::values"]])})
    return rows
