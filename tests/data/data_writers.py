"""Writers for tiny files in the real dataset formats (imported by conftest and tests)."""

from __future__ import annotations

import gzip
import struct
from pathlib import Path

import numpy as np

IDX_NAMES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def idx_bytes(array: np.ndarray) -> bytes:
    """Encode a uint8 array as an IDX file."""
    assert array.dtype == np.uint8
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim)
    header += struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def write_idx(path: Path, array: np.ndarray, gz: bool = False) -> Path:
    data = idx_bytes(array)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(data))
    else:
        path.write_bytes(data)
    return path


def constant_images(n: int, offset: int = 0, size: int = 28) -> np.ndarray:
    """Image i is filled with the value ``offset + i`` (so samples can be identified)."""
    values = (np.arange(n) + offset).astype(np.uint8)
    return np.broadcast_to(values[:, None, None], (n, size, size)).copy()


def cifar_batch(n: int, offset: int, seed: int) -> dict[bytes, object]:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, size=(n, 3072), dtype=np.uint8)
    data[:, 0] = np.arange(n) + offset  # first red pixel identifies the sample
    labels = [int(v) for v in (np.arange(n) + offset) % 10]
    return {b"batch_label": b"tiny", b"data": data, b"labels": labels}
