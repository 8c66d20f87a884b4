"""Writers for tiny files in the real dataset formats (IDX, CIFAR pickles, image folders)."""

from __future__ import annotations

import pickle
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
from data_writers import IDX_NAMES, cifar_batch, constant_images, write_idx
from PIL import Image


@pytest.fixture
def make_idx_dataset() -> Callable[..., dict[str, np.ndarray]]:
    """Write an IDX dataset (train: values 0..n_train-1, test: 100..) into a folder."""

    def make(folder: Path, n_train: int = 20, n_test: int = 10, gz: bool = False) -> dict:
        folder.mkdir(parents=True, exist_ok=True)
        arrays = {
            "train_images": constant_images(n_train),
            "train_labels": (np.arange(n_train) % 10).astype(np.uint8),
            "test_images": constant_images(n_test, offset=100),
            "test_labels": ((np.arange(n_test) * 3) % 10).astype(np.uint8),
        }
        for key, arr in arrays.items():
            write_idx(folder / IDX_NAMES[key], arr, gz=gz)
        return arrays

    return make


@pytest.fixture
def make_cifar() -> Callable[..., Path]:
    """Write 5 train batches and a test batch (n images each) into folder/cifar-10-batches-py."""

    def make(root: Path, n: int = 10) -> Path:
        folder = root / "cifar-10-batches-py"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(1, 6):
            with open(folder / f"data_batch_{i}", "wb") as fh:
                pickle.dump(cifar_batch(n, (i - 1) * n, seed=i), fh)
        with open(folder / "test_batch", "wb") as fh:
            pickle.dump(cifar_batch(n, 200, seed=9), fh)
        return folder

    return make


@pytest.fixture
def make_image_folder() -> Callable[..., Path]:
    """ImageNet-like layout with 2 classes of small 40x30 images (JPEG, .JPEG, PNG)."""

    def make(root: Path, n_train: int = 4, n_val: int = 2) -> Path:
        rng = np.random.default_rng(0)
        for split, n in (("train", n_train), ("val", n_val)):
            for c, wnid in enumerate(("n01440764", "n01443537")):
                d = root / split / wnid
                d.mkdir(parents=True, exist_ok=True)
                for i in range(n):
                    arr = rng.integers(0, 256, size=(30, 40, 3), dtype=np.uint8)
                    arr[..., c] = 255  # class colour cue
                    ext = (".JPEG", ".jpg", ".png", ".jpeg")[i % 4]
                    Image.fromarray(arr).save(d / f"{wnid}_{i}{ext}")
                (d / "notes.txt").write_text("not an image")
        return root

    return make
