"""CIFAR-10 loader for the official Python pickle batches (``cifar-10-batches-py``).

Each batch file is a pickle of a dict with ``b'data'`` (uint8, ``(N, 3072)``, channel-major
32x32 RGB) and ``b'labels'`` (N ints). A plain ``pickle.load`` can run any code a file asks
for, so the batches are read by :class:`BatchUnpickler`, which builds only the types of this
layout (dicts, lists, strings, bytes, numbers and integer numpy arrays) and refuses every other
global before anything is called.
"""

from __future__ import annotations

import codecs
import io
import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .download import download_file, extract_tar, md5sum
from .errors import DatasetError

logger = logging.getLogger(__name__)

URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
ARCHIVE = "cifar-10-python.tar.gz"
ARCHIVE_MD5 = "c58f30108f718f92721af3b95e74349a"
FOLDER = "cifar-10-batches-py"
TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
TEST_BATCH = "test_batch"
CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer",
    "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip
MEAN = (0.4914, 0.4822, 0.4465)
STD = (0.2470, 0.2435, 0.2616)

_FIX = "delete the folder and re-download (data.download=true) or point data.root at a good copy"

MAX_BATCH_BYTES = 64 << 20
"""Largest batch file read (64 MiB). A real CIFAR-10 batch is about 31 MB (10,000 images of
3,072 bytes plus their labels and the pickle's overhead); the bound leaves twice that as
headroom and stops a huge or crafted file in the data folder from being read into memory. The
file's size is checked before it is read, and no more than this is ever read from it."""


def cifar_candidate_dirs(root: Path) -> list[Path]:
    """Folders that may hold the batch files: root itself, root/cifar-10-batches-py, ..."""
    return [root, root / FOLDER, root / "cifar10" / FOLDER]


def _locate(root: Path) -> Path | None:
    for folder in cifar_candidate_dirs(root):
        if all((folder / f).is_file() for f in (*TRAIN_BATCHES, TEST_BATCH)):
            return folder
    return None


class RefusedPickle(pickle.UnpicklingError):
    """The pickle asks for something outside the CIFAR batch layout (it was not built)."""


_INTEGER_DTYPES = frozenset(
    np.dtype(name) for name in ("u1", "i1", "<u2", "<i2", "<u4", "<i4", "<u8", "<i8"))


def _dtype(name: Any, align: bool = False, copy: bool = True) -> np.dtype:
    """``numpy.dtype`` restricted to the integer types a batch may hold (no object arrays)."""
    if isinstance(name, bytes):
        name = name.decode("ascii", "replace")
    if not isinstance(name, str) or np.dtype(name) not in _INTEGER_DTYPES:
        raise RefusedPickle(f"array type {name!r} is not an integer type")
    return np.dtype(name)


_NDARRAY = object()
"""Stands for ``numpy.ndarray`` in a pickle: only :func:`_reconstruct` accepts it."""


def _reconstruct(cls: Any, shape: Any, typecode: Any) -> np.ndarray:
    """The numpy (protocol <= 4) array constructor: an empty array that the pickle's
    ``__setstate__`` then fills (shape, restricted dtype, raw bytes)."""
    if cls is not _NDARRAY:
        raise RefusedPickle("only plain numpy arrays are allowed")
    return np.empty(0, np.uint8)


def _frombuffer(buffer: Any, dtype: Any, shape: Any, order: Any) -> np.ndarray:
    """The numpy protocol-5 array constructor, for integer arrays only."""
    if not isinstance(dtype, np.dtype) or dtype not in _INTEGER_DTYPES:
        raise RefusedPickle(f"array type {dtype!r} is not an integer type")
    array = np.frombuffer(bytes(buffer), dtype=dtype)
    return array.reshape(tuple(shape), order="F" if order == "F" else "C").copy()


def _encode(text: Any, encoding: Any = "latin1") -> bytes:
    """``_codecs.encode``: how Python 3 writes bytes at protocol 2 (latin-1 text only)."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1"):
        raise RefusedPickle("only latin-1 byte strings are allowed")
    return codecs.encode(text, "latin1")


_ALLOWED: dict[tuple[str, str], Any] = {
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _dtype,
    ("numpy.core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy._core.multiarray", "_reconstruct"): _reconstruct,
    ("numpy.core.numeric", "_frombuffer"): _frombuffer,
    ("numpy._core.numeric", "_frombuffer"): _frombuffer,
    ("_codecs", "encode"): _encode,
}


class BatchUnpickler(pickle.Unpickler):
    """An unpickler that builds only the CIFAR batch layout and refuses any other global."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _ALLOWED[(module, name)]
        except KeyError:
            raise RefusedPickle(
                f"refused to load {module}.{name}: a CIFAR-10 batch holds only dicts, lists, "
                "strings and integer arrays") from None


def safe_unpickle(data: bytes) -> Any:
    """Unpickle ``data`` with :class:`BatchUnpickler` (Python 2 strings read as bytes)."""
    return BatchUnpickler(io.BytesIO(data), encoding="bytes").load()


def _get(d: dict[Any, Any], key: str) -> Any:
    if key.encode() in d:
        return d[key.encode()]
    return d.get(key)


def _read_batch_file(path: Path) -> bytes:
    """The bytes of a batch file of at most :data:`MAX_BATCH_BYTES` (its size is checked
    before anything is read, and the read stops past the bound: a file that grows meanwhile,
    or whose size is not known in advance, is refused too)."""
    try:
        size = path.stat().st_size
        if size > MAX_BATCH_BYTES:
            raise DatasetError(
                f"CIFAR-10 batch {path} is {size:,} bytes, more than the {MAX_BATCH_BYTES:,} a "
                f"batch file may hold here (a real one is about 31 MB); it was not read; {_FIX}.")
        with path.open("rb") as fh:
            data = fh.read(MAX_BATCH_BYTES + 1)
    except OSError as exc:
        raise DatasetError(f"Cannot read CIFAR-10 batch {path}: {exc!r}; {_FIX}.") from exc
    if len(data) > MAX_BATCH_BYTES:
        raise DatasetError(
            f"CIFAR-10 batch {path} holds more than the {MAX_BATCH_BYTES:,} bytes a batch file "
            f"may hold here (a real one is about 31 MB), though its size said {size:,}; it was "
            f"not loaded; {_FIX}.")
    return data


def load_batch(path: Path) -> tuple[Tensor, Tensor]:
    """Load and validate one pickle batch (a file of at most :data:`MAX_BATCH_BYTES`); return
    uint8 ``(N, 3, 32, 32)`` and int64 labels."""
    raw = _read_batch_file(path)
    try:
        d = safe_unpickle(raw)
    except RefusedPickle as exc:
        raise DatasetError(f"CIFAR-10 batch {path} is not a plain CIFAR batch ({exc}); it was "
                           f"not loaded and nothing in it was run; {_FIX}.") from exc
    except Exception as exc:  # unpickling corrupt data can raise almost anything
        raise DatasetError(f"Cannot read CIFAR-10 batch {path}: {exc!r}; {_FIX}.") from exc
    del raw  # the file's bytes are not kept while the arrays are checked and converted
    if not isinstance(d, dict):
        raise DatasetError(
            f"CIFAR-10 batch {path} holds a {type(d).__name__}, expected a dict; {_FIX}."
        )
    data, labels = _get(d, "data"), _get(d, "labels")
    if data is None or labels is None:
        raise DatasetError(
            f"CIFAR-10 batch {path} lacks the b'data' and/or b'labels' keys "
            f"(found {sorted(map(str, d))}); {_FIX}."
        )
    data = np.asarray(data)
    if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
        raise DatasetError(
            f"CIFAR-10 batch {path}: b'data' is {data.dtype} {data.shape}, expected uint8 "
            f"(N, 3072); {_FIX}."
        )
    try:
        labels = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError) as exc:
        raise DatasetError(f"CIFAR-10 batch {path}: b'labels' is not a list of ints.") from exc
    if labels.shape != (data.shape[0],):
        raise DatasetError(
            f"CIFAR-10 batch {path}: {data.shape[0]} images but labels of shape {labels.shape}; "
            f"{_FIX}."
        )
    if labels.size and (labels.min() < 0 or labels.max() > 9):
        raise DatasetError(f"CIFAR-10 batch {path}: labels outside 0..9; {_FIX}.")
    images = torch.from_numpy(data.reshape(-1, 3, 32, 32).copy())
    return images, torch.from_numpy(labels)


def _download(root: Path) -> None:
    archive = root / ARCHIVE
    if not (archive.is_file() and md5sum(archive) == ARCHIVE_MD5):
        download_file(URL, archive, ARCHIVE_MD5)
    logger.info("Extracting %s", archive)
    extract_tar(archive, root)


def load_cifar10(root: Path, download: bool) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Load CIFAR-10 as raw uint8 tensors (train_x, train_y, test_x, test_y)."""
    folder = _locate(root)
    if folder is None and download:
        _download(root)
        folder = _locate(root)
    if folder is None:
        expected = ", ".join((*TRAIN_BATCHES, TEST_BATCH))
        raise DatasetError(
            f"cifar10: batch files not found. Expected {expected} in {root / FOLDER} (or in "
            f"{root} itself). Fix: set data.download=true to fetch {URL}, or "
            "data.root=/path/to/cifar-10-batches-py (or its parent folder)."
        )
    logger.info("Loading cifar10 from %s", folder)
    parts = [load_batch(folder / f) for f in TRAIN_BATCHES]
    train_x = torch.cat([p[0] for p in parts])
    train_y = torch.cat([p[1] for p in parts])
    test_x, test_y = load_batch(folder / TEST_BATCH)
    return train_x, train_y, test_x, test_y
