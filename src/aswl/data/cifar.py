"""CIFAR-10 loader for the official Python pickle batches (``cifar-10-batches-py``).

Each batch file is a pickle of a dict with ``b'data'`` (uint8, ``(N, 3072)``, channel-major
32x32 RGB) and ``b'labels'`` (N ints). Note that unpickling can execute code: only load batch
files from a trusted source (the official archive is verified by MD5 after download).
"""

from __future__ import annotations

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


def cifar_candidate_dirs(root: Path) -> list[Path]:
    """Folders that may hold the batch files: root itself, root/cifar-10-batches-py, ..."""
    return [root, root / FOLDER, root / "cifar10" / FOLDER]


def _locate(root: Path) -> Path | None:
    for folder in cifar_candidate_dirs(root):
        if all((folder / f).is_file() for f in (*TRAIN_BATCHES, TEST_BATCH)):
            return folder
    return None


def _get(d: dict[Any, Any], key: str) -> Any:
    if key.encode() in d:
        return d[key.encode()]
    return d.get(key)


def load_batch(path: Path) -> tuple[Tensor, Tensor]:
    """Load and validate one pickle batch; return uint8 ``(N, 3, 32, 32)`` and int64 labels."""
    try:
        with open(path, "rb") as fh:
            d = pickle.load(fh, encoding="bytes")  # noqa: S301 - standard CIFAR format
    except Exception as exc:  # unpickling corrupt data can raise almost anything
        raise DatasetError(f"Cannot read CIFAR-10 batch {path}: {exc!r}; {_FIX}.") from exc
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
