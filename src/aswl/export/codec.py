"""Byte codecs of the compact format v2: kept positions, value quantization, compression.

Positions of the nonzero weights of a flat tensor are coded one of four ways, and each coded
stream is then kept raw or compressed with zlib or lzma (standard library), whichever is smallest:

- ``bitmap``: 1 bit per weight (numpy ``packbits``);
- ``delta8`` / ``delta16``: the gaps ``d_i = pos_i - pos_{i-1} - 1`` as uint8 / uint16, a gap
  too large written as repeated escape words (255 / 65535) that add up;
- ``rice``: Golomb-Rice code of the gaps with the best parameter ``k``, within a few percent of
  the entropy of an i.i.d. mask (the quotients in unary, the remainders in ``k`` bits each);
- ``dense``: no positions (every weight is stored).

Values are fp32 (lossless), fp16, bf16, ``int8`` (one linear scale per tensor, symmetric) or
``kmeansN`` (a codebook of 2^N centroids fitted by 1-D k-means, N = 4..8, as in Deep
Compression, Han et al. 2016), the codes packed in N bits.

Every decoder checks lengths and ranges and raises :class:`CodecError` on bad input, so a corrupt
file gives a clear error and never a wrong model.
"""

from __future__ import annotations

import lzma
import zlib
from typing import Any

import numpy as np

INDEX_CODES = ("bitmap", "delta8", "delta16", "rice", "dense")
QUANTIZATIONS = ("fp32", "fp16", "bf16", "int8", "kmeans4", "kmeans5", "kmeans6", "kmeans7",
                 "kmeans8")
_LZMA_FILTERS = [{"id": lzma.FILTER_LZMA2, "preset": 6, "dict_size": 1 << 22}]


class CodecError(ValueError):
    """A coded stream does not decode to what its description says."""


# ---------------------------------------------------------------- compression of byte streams

def compress(data: bytes) -> tuple[str, bytes]:
    """``(method, bytes)``: the smallest of raw, zlib and lzma (raw streams, no headers)."""
    best = ("raw", data)
    if len(data) < 16:
        return best
    deflate = zlib.compressobj(6, zlib.DEFLATED, -15)
    candidates = [("zlib", deflate.compress(data) + deflate.flush()),
                  ("lzma", lzma.compress(data, format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS))]
    for method, packed in candidates:
        if len(packed) < len(best[1]):
            best = (method, packed)
    return best


def decompress(method: str, data: bytes, size: int) -> bytes:
    """Undo :func:`compress`; ``size`` is the expected length (guards against bombs)."""
    try:
        if method == "raw":
            out = data
        elif method == "zlib":
            inflate = zlib.decompressobj(-15)
            out = inflate.decompress(data, size + 1)
        elif method == "lzma":
            unpack = lzma.LZMADecompressor(format=lzma.FORMAT_RAW, filters=_LZMA_FILTERS)
            out = unpack.decompress(data, size + 1)
        else:
            raise CodecError(f"unknown compression {method!r}")
    except (zlib.error, lzma.LZMAError) as err:
        raise CodecError(f"{method} stream is corrupt: {err}") from err
    if len(out) != size:
        raise CodecError(f"{method} stream holds {len(out)} bytes, expected {size}")
    return out


# ------------------------------------------------------------------------ kept positions

def _escaped_gaps(gaps: np.ndarray, dtype: type) -> np.ndarray:
    escape = np.iinfo(dtype).max
    repeats = gaps // escape
    out = np.full(int(repeats.sum()) + gaps.size, escape, dtype=dtype)
    ends = np.cumsum(repeats + 1) - 1
    out[ends] = (gaps % escape).astype(dtype)
    return out


def _unescape_gaps(words: np.ndarray, dtype: type) -> np.ndarray:
    escape = np.iinfo(dtype).max
    totals = np.cumsum(words.astype(np.int64))
    ends = np.flatnonzero(words != escape)
    if ends.size and ends[-1] != words.size - 1:
        raise CodecError("gap stream ends inside an escape")
    at_end = totals[ends]
    return np.diff(at_end, prepend=0)


def _rice_encode(gaps: np.ndarray, k: int) -> bytes:
    quotients = gaps >> k
    remainders = gaps & ((1 << k) - 1)
    rem_bits = ((remainders[:, None] >> np.arange(k - 1, -1, -1)) & 1).astype(np.uint8)
    unary = np.ones(int(quotients.sum()) + gaps.size, dtype=np.uint8)
    unary[np.cumsum(quotients + 1) - 1] = 0
    return np.packbits(rem_bits.reshape(-1)).tobytes() + np.packbits(unary).tobytes()


def _rice_decode(data: bytes, count: int, k: int) -> np.ndarray:
    rem_bytes = (count * k + 7) // 8
    if len(data) < rem_bytes:
        raise CodecError("rice stream is shorter than its remainders")
    buffer = np.frombuffer(data, dtype=np.uint8)
    rem_bits = np.unpackbits(buffer[:rem_bytes])[:count * k].reshape(count, k).astype(np.int64)
    remainders = (rem_bits << np.arange(k - 1, -1, -1)).sum(axis=1) if k else np.zeros(count,
                                                                                        np.int64)
    zeros = np.flatnonzero(np.unpackbits(buffer[rem_bytes:]) == 0)
    if zeros.size < count:
        raise CodecError("rice stream holds fewer gaps than expected")
    quotients = np.diff(zeros[:count], prepend=-1) - 1
    return (quotients << k) + remainders


def _rice_size(gaps: np.ndarray, k: int) -> int:
    return (gaps.size * k + 7) // 8 + (int((gaps >> k).sum()) + gaps.size + 7) // 8


def encode_positions(kept: np.ndarray) -> list[tuple[dict[str, Any], bytes]]:
    """Every candidate coding of the boolean flat mask ``kept``: ``(description, bytes)``."""
    positions = np.flatnonzero(kept).astype(np.int64)
    gaps = np.diff(positions, prepend=-1) - 1
    out: list[tuple[dict[str, Any], bytes]] = [
        ({"code": "bitmap"}, np.packbits(kept.astype(np.uint8)).tobytes())]
    if positions.size == kept.size:
        out.append(({"code": "dense"}, b""))
    if positions.size:
        out.append(({"code": "delta8"}, _escaped_gaps(gaps, np.uint8).tobytes()))
        out.append(({"code": "delta16"}, _escaped_gaps(gaps, np.uint16).astype("<u2").tobytes()))
        k = min(range(16), key=lambda k: _rice_size(gaps, k))
        out.append(({"code": "rice", "k": k}, _rice_encode(gaps, k)))
    return out


def decode_positions(desc: dict[str, Any], data: bytes, numel: int, count: int) -> np.ndarray:
    """The flat int64 positions of the ``count`` kept weights of a tensor of ``numel``."""
    code = desc.get("code")
    if code == "dense":
        positions = np.arange(numel, dtype=np.int64)
    elif code == "bitmap":
        if len(data) != (numel + 7) // 8:
            raise CodecError(f"bitmap holds {len(data)} bytes, expected {(numel + 7) // 8}")
        bits = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[:numel]
        positions = np.flatnonzero(bits).astype(np.int64)
    elif code in ("delta8", "delta16"):
        dtype = np.uint8 if code == "delta8" else np.dtype("<u2")
        if len(data) % np.dtype(dtype).itemsize:
            raise CodecError(f"{code} stream has a partial word")
        words = np.frombuffer(data, dtype=dtype)
        positions = np.cumsum(_unescape_gaps(words, np.dtype(dtype).type) + 1) - 1
    elif code == "rice":
        k = desc.get("k")
        if not isinstance(k, int) or not 0 <= k < 32:
            raise CodecError(f"bad rice parameter {k!r}")
        positions = np.cumsum(_rice_decode(data, count, k) + 1) - 1
    else:
        raise CodecError(f"unknown position code {code!r}")
    if positions.size != count:
        raise CodecError(f"{code} holds {positions.size} positions, expected {count}")
    if count and (positions[-1] >= numel or positions[0] < 0):
        raise CodecError(f"{code} position out of range for {numel} weights")
    return positions


# ------------------------------------------------------------------------------- values

def _kmeans_1d(values: np.ndarray, clusters: int, iterations: int = 30) -> np.ndarray:
    """Centroids of 1-D k-means with linear initialisation (Han et al. 2016)."""
    lo, hi = float(values.min()), float(values.max())
    centroids = np.linspace(lo, hi, clusters)
    order = np.sort(values.astype(np.float64))
    prefix = np.concatenate([[0.0], np.cumsum(order)])
    for _ in range(iterations):
        edges = (centroids[1:] + centroids[:-1]) / 2
        bounds = np.concatenate([[0], np.searchsorted(order, edges), [order.size]])
        counts = np.diff(bounds)
        sums = prefix[bounds[1:]] - prefix[bounds[:-1]]
        updated = np.where(counts > 0, sums / np.maximum(counts, 1), centroids)
        if np.allclose(updated, centroids, rtol=0, atol=1e-12):
            break
        centroids = np.sort(updated)
    return centroids.astype(np.float32)


def _pack_codes(codes: np.ndarray, bits: int) -> bytes:
    matrix = ((codes[:, None].astype(np.int64) >> np.arange(bits - 1, -1, -1)) & 1)
    return np.packbits(matrix.astype(np.uint8).reshape(-1)).tobytes()


def _unpack_codes(data: bytes, count: int, bits: int) -> np.ndarray:
    if len(data) != (count * bits + 7) // 8:
        raise CodecError(f"{bits}-bit codes hold {len(data)} bytes, expected "
                         f"{(count * bits + 7) // 8}")
    matrix = np.unpackbits(np.frombuffer(data, dtype=np.uint8))[:count * bits]
    return (matrix.reshape(count, bits).astype(np.int64) << np.arange(bits - 1, -1, -1)).sum(1)


def quantize(values: np.ndarray, mode: str) -> tuple[dict[str, Any], bytes, np.ndarray | None]:
    """Code float32 ``values`` for ``int8`` or ``kmeansN``: (description, code bytes,
    codebook or None). fp32/fp16/bf16 are stored as plain tensors and do not come here."""
    if mode == "int8":
        peak = float(np.abs(values).max()) if values.size else 0.0
        scale = peak / 127 if peak > 0 else 1.0
        codes = np.clip(np.rint(values / scale), -127, 127).astype(np.int8)
        return {"quant": "int8", "scale": scale}, codes.tobytes(), None
    if mode.startswith("kmeans"):
        bits = int(mode[len("kmeans"):])
        if values.size == 0:
            return {"quant": "kmeans", "bits": bits}, b"", np.zeros(0, np.float32)
        clusters = min(1 << bits, int(np.unique(values).size))
        codebook = _kmeans_1d(values, clusters)
        edges = (codebook[1:] + codebook[:-1]) / 2
        codes = np.searchsorted(edges, values)
        return {"quant": "kmeans", "bits": bits}, _pack_codes(codes, bits), codebook
    raise CodecError(f"unknown quantization {mode!r}; use one of {', '.join(QUANTIZATIONS)}")


def dequantize(desc: dict[str, Any], data: bytes, count: int,
               codebook: np.ndarray | None) -> np.ndarray:
    """float32 values from :func:`quantize`'s output."""
    kind = desc.get("quant")
    if kind == "int8":
        if len(data) != count:
            raise CodecError(f"int8 codes hold {len(data)} bytes, expected {count}")
        scale = desc.get("scale")
        if not isinstance(scale, (int, float)):
            raise CodecError(f"bad int8 scale {scale!r}")
        return np.frombuffer(data, dtype=np.int8).astype(np.float32) * np.float32(scale)
    if kind == "kmeans":
        bits = desc.get("bits")
        if not isinstance(bits, int) or not 1 <= bits <= 8:
            raise CodecError(f"bad k-means code width {bits!r}")
        codes = _unpack_codes(data, count, bits)
        if codebook is None or (count and codes.max() >= codebook.size):
            raise CodecError("k-means code outside its codebook")
        return codebook[codes].astype(np.float32)
    raise CodecError(f"unknown quantization {kind!r}")
