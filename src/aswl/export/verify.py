"""Checks of a model file before it is trusted: header first, limits before allocation, SHA-256.

A safetensors file is an 8-byte length, a JSON header (every tensor's dtype, shape and byte
range, plus string metadata) and the tensor bytes. :func:`read_header` reads and checks the
header alone: its length and every byte range against the file size, every JSON field's type.
:func:`check_layout` then checks what a compact file declares (shapes, counts, position codes,
stream sizes, quantization scales and code widths) against the model it is loaded into (or,
with no model, against a bound of :data:`WEIGHTS_PER_BYTE` weights per file byte), so that no
stream is decoded and no buffer is allocated for a crafted declaration.

:func:`content_sha256` is the checksum aswl writes into its files' metadata (``aswl_sha256``):
SHA-256 over every metadata entry and every tensor's name, dtype, shape and bytes, so a flipped
bit anywhere in a file (data or metadata) is detected when it is loaded.
"""

from __future__ import annotations

import hashlib
import json
import math
import struct
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

SHA_KEY = "aswl_sha256"
KNOWN_KEYS = frozenset({"aswl_compact_version", "aswl_quantize", "aswl_layout", "aswl_cast",
                        "aswl_crc32", "aswl_sparse_shapes", SHA_KEY})
"""Every metadata key aswl writes; any other ``aswl_`` key means a damaged file."""
MAX_HEADER = 100 << 20
"""Longest safetensors JSON header read (100 MiB, as the safetensors library allows)."""
WEIGHTS_PER_BYTE = 1 << 14
"""With no model to compare with, a compact file may declare at most this many weights per byte
of file (99.99% sparse k-means codes stay below it), and at least 4M weights."""
_ITEM_BYTES = {"F64": 8, "F32": 4, "F16": 2, "BF16": 2, "I64": 8, "I32": 4, "I16": 2, "I8": 1,
               "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1, "F8_E4M3": 1, "F8_E5M2": 1}
_ZIPS = ("raw", "zlib", "lzma")
_INDEX_CODES = ("bitmap", "delta8", "delta16", "rice", "dense")
_FLOAT_QUANT = {"fp32": "F32", "fp16": "F16", "bf16": "BF16"}
DTYPE_NAMES = ("float32", "float16", "bfloat16", "float64")


class ExportError(RuntimeError):
    """An exported file is missing, corrupt, or does not match the model."""


class Mismatch(ValueError):
    """A file's declarations are fine but are not those of the model it is loaded into."""


@dataclass
class Header:
    """The checked JSON header of a safetensors file."""

    tensors: dict[str, tuple[str, tuple[int, ...]]] = field(default_factory=dict)
    metadata: dict[str, str] = field(default_factory=dict)
    size: int = 0


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def read_header(path: str | Path, what: str = "model file") -> Header:
    """The header of a safetensors file, every entry checked against the file size."""
    path = Path(path)
    if not path.is_file():
        raise ExportError(f"{what} {str(path)!r} not found")
    bad = f"{str(path)!r} is not a valid safetensors file"
    try:
        size = path.stat().st_size
        with open(path, "rb") as file:
            start = file.read(8)
            if len(start) < 8:
                raise ExportError(f"{bad} (only {size} bytes); export it again")
            (length,) = struct.unpack("<Q", start)
            if length > min(MAX_HEADER, size - 8):
                raise ExportError(f"{bad} (its header claims {length:,} bytes of a {size:,}-byte "
                                  "file: truncated or corrupt); export it again")
            raw = file.read(length)
    except OSError as err:
        raise ExportError(f"{what} {str(path)!r} cannot be read: {err.strerror or err}") from err
    try:
        entries = json.loads(raw)
    except (ValueError, RecursionError):
        raise ExportError(f"{bad} (its header is not JSON: corrupt); export it again") from None
    if not isinstance(entries, dict):
        raise ExportError(f"{bad} (its header is not a JSON object); export it again")
    header = Header(size=size)
    data_bytes = size - 8 - length
    metadata = entries.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise ExportError(f"{bad} (its metadata is not a map of strings); export it again")
    header.metadata = metadata
    for key, entry in entries.items():
        ok = isinstance(entry, dict) and entry.get("dtype") in _ITEM_BYTES \
            and isinstance(entry.get("shape"), list) \
            and all(_is_int(s) and s >= 0 for s in entry["shape"]) \
            and isinstance(entry.get("data_offsets"), list) and len(entry["data_offsets"]) == 2 \
            and all(_is_int(o) for o in entry["data_offsets"])
        if ok:
            begin, end = entry["data_offsets"]
            numel = math.prod(entry["shape"])
            ok = 0 <= begin <= end <= data_bytes and end - begin == \
                numel * _ITEM_BYTES[entry["dtype"]]
        if not ok:
            raise ExportError(f"{bad} (tensor {key[:80]!r} has a bad dtype, shape or byte range "
                              "for the file's size: truncated or corrupt); export it again")
        header.tensors[key] = (entry["dtype"], tuple(entry["shape"]))
    unknown = sorted(k for k in metadata if k.startswith("aswl") and k not in KNOWN_KEYS)
    if unknown:
        raise ExportError(f"{str(path)!r} is corrupt: unknown metadata {unknown[0][:40]!r} (a "
                          "damaged key?); export it again")
    return header


def json_field(metadata: dict[str, str], key: str, path: str | Path, default: str | None = None
               ) -> dict[str, Any]:
    """A metadata entry that must hold a JSON object, or a clear :class:`ExportError`."""
    text = metadata.get(key, default)
    if text is None:
        raise ExportError(f"{str(path)!r} is a corrupt aswl compact file (no {key} metadata); "
                          "export it again")
    try:
        value = json.loads(text)
    except (ValueError, RecursionError):
        value = None
    if not isinstance(value, dict):
        raise ExportError(f"{str(path)!r} is a corrupt aswl compact file ({key} is not a JSON "
                          "object); export it again")
    return value


def _shape(info: Any, key: str, expected: dict[str, tuple[int, ...]] | None) -> tuple[int, ...]:
    shape = info.get("shape") if isinstance(info, dict) else info
    if not isinstance(shape, list) or not all(_is_int(s) and s >= 0 for s in shape):
        raise ValueError(f"{key}: bad shape {str(shape)[:60]}")
    if expected is not None:
        if key not in expected:
            raise Mismatch(f"{key[:80]} is not a tensor of the model")
        if tuple(shape) != tuple(expected[key]):
            raise Mismatch(f"{key} declares shape {tuple(shape)[:8]}, the model's is "
                             f"{tuple(expected[key])}")
    return tuple(shape)


def _stored(header: Header, name: str, dtypes: tuple[str, ...], numel: int | None = None) -> int:
    """Check a stored tensor's dtype (and element count); returns its element count."""
    if name not in header.tensors:
        raise ValueError(f"missing tensor {name[:80]}")
    dtype, shape = header.tensors[name]
    if dtype not in dtypes:
        raise ValueError(f"{name[:80]} is {dtype}, expected {'/'.join(dtypes)}")
    count = math.prod(shape)
    if numel is not None and count != numel:
        raise ValueError(f"{name[:80]} holds {count} values, expected {numel}")
    return count


def _check_values(header: Header, key: str, desc: Any, count: int) -> None:
    if not isinstance(desc, dict):
        raise ValueError(f"{key}: bad value description")
    quant = desc.get("quant")
    if quant in _FLOAT_QUANT:
        _stored(header, f"{key}::values", (_FLOAT_QUANT[quant],), count)
        return
    if quant == "int8":
        scale = desc.get("scale")
        if not (isinstance(scale, (int, float)) and not isinstance(scale, bool)
                and math.isfinite(scale) and scale > 0):
            raise ValueError(f"{key}: int8 scale {str(scale)[:20]} is not a finite number > 0")
        code_bytes = count
    elif quant == "kmeans":
        bits = desc.get("bits")
        if not (_is_int(bits) and 1 <= bits <= 8):
            raise ValueError(f"{key}: bad k-means code width {str(bits)[:20]}")
        code_bytes = (count * bits + 7) // 8
        if _stored(header, f"{key}::codebook", ("F32",)) > 1 << bits:
            raise ValueError(f"{key}: codebook larger than 2^{bits}")
    else:
        raise ValueError(f"{key}: unknown quantization {str(quant)[:20]}")
    _check_stream(header, f"{key}::values", desc, code_bytes, code_bytes)


def _check_stream(header: Header, name: str, desc: dict[str, Any], low: int, high: int) -> None:
    """A byte stream's declared (decompressed) size within [low, high]; raw: stored exactly."""
    size, method = desc.get("size"), desc.get("zip")
    if method not in _ZIPS or not _is_int(size) or not low <= size <= high:
        raise ValueError(f"{name[:80]}: bad stream ({str(method)[:10]}, size {str(size)[:20]}; "
                         f"expected {low}..{high} bytes)")
    _stored(header, name, ("U8",), size if method == "raw" else None)


def check_layout(header: Header, layout: dict[str, Any], cast: dict[str, Any],
                 expected: dict[str, tuple[int, ...]] | None) -> None:
    """Every declaration of a v2 file checked (ValueError naming the first bad one)."""
    total = 0
    for key, info in layout.items():
        if not isinstance(info, dict):
            raise ValueError(f"{key[:80]}: bad layout entry")
        numel = math.prod(_shape(info, key, expected))
        total += numel
        count = info.get("count")
        if not (_is_int(count) and 0 <= count <= numel):
            raise ValueError(f"{key}: {str(count)[:20]} values for {numel} weights")
        if info.get("dtype", "float32") not in DTYPE_NAMES:
            raise ValueError(f"{key}: unknown dtype {str(info.get('dtype'))[:20]}")
        index = info.get("index")
        if not isinstance(index, dict) or index.get("code") not in _INDEX_CODES:
            raise ValueError(f"{key}: unknown position code")
        # no position code is longer than this (bitmap numel/8, rice 4 bytes per kept weight)
        _check_stream(header, f"{key}::index", index, 0, numel + 4 * count + 16)
        _check_values(header, key, info.get("values"), count)
    for key, dtype in cast.items():
        if dtype not in DTYPE_NAMES or key not in header.tensors:
            raise ValueError(f"{key[:80]}: bad cast entry")
    _check_total(header, total, expected)


def check_v1(header: Header, shapes: dict[str, Any],
             expected: dict[str, tuple[int, ...]] | None) -> None:
    """Every declaration of a v1 file checked (ValueError naming the first bad one)."""
    total = 0
    for key, shape in shapes.items():
        numel = math.prod(_shape(shape, key, expected))
        total += numel
        count = _stored(header, f"{key}::values", ("F32", "F16", "BF16", "F64"))
        if count > numel:
            raise ValueError(f"{key}: {count} values for {numel} weights")
        if f"{key}::indices" in header.tensors:
            _stored(header, f"{key}::indices", ("I32", "I64"), count)
        else:
            _stored(header, f"{key}::bitmap", ("U8",), (numel + 7) // 8)
    _check_total(header, total, expected)


def _check_total(header: Header, total: int, expected: dict[str, tuple[int, ...]] | None) -> None:
    bound = max(1 << 22, WEIGHTS_PER_BYTE * header.size)
    if expected is None and total > bound:
        raise ValueError(f"it declares {total:,} weights, more than {bound:,} for a "
                         f"{header.size:,}-byte file (load it into its model to lift this bound)")


def content_sha256(tensors: dict[str, Tensor], metadata: dict[str, str]) -> str:
    """SHA-256 over every metadata entry (but itself) and every tensor's name, dtype, shape
    and bytes, in key order: what ``aswl_sha256`` holds."""
    digest = hashlib.sha256(b"aswl-sha256-v1\n")
    for key in sorted(metadata):
        if key != SHA_KEY:
            digest.update(json.dumps([key, metadata[key]]).encode() + b"\n")
    for key in sorted(tensors):
        tensor = tensors[key].detach().cpu().contiguous()
        digest.update(json.dumps([key, str(tensor.dtype), list(tensor.shape)]).encode() + b"\n")
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy().data)
    return digest.hexdigest()


def check_sha256(tensors: dict[str, Tensor], metadata: dict[str, str], path: str | Path) -> bool:
    """Verify ``aswl_sha256`` when the file has one (False when it has none)."""
    if SHA_KEY not in metadata:
        return False
    if content_sha256(tensors, metadata) != metadata[SHA_KEY]:
        raise ExportError(f"{str(path)!r} is corrupt: its SHA-256 does not match its contents "
                          "(changed or damaged after it was written); export it again or "
                          "restore a copy")
    return True
