"""CIFAR-10 from tiny pickle batches; batched augmentation."""

from __future__ import annotations

import hashlib
import io
import pickle
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch
from data_writers import cifar_batch
from torch.utils.data import DataLoader

from aswl.data import DatasetError, InMemoryDataset, RandomCropFlip, build_datasets
from aswl.data import cifar as cifar_mod

MEAN = torch.tensor((0.4914, 0.4822, 0.4465)).view(1, 3, 1, 1)
STD = torch.tensor((0.2470, 0.2435, 0.2616)).view(1, 3, 1, 1)


@pytest.mark.parametrize("point_at_folder", [False, True])
def test_cifar_loads(tmp_path: Path, make_cifar, point_at_folder: bool) -> None:
    folder = make_cifar(tmp_path)
    ds = build_datasets("cifar10", root=folder if point_at_folder else tmp_path)
    assert isinstance(ds.train, InMemoryDataset) and isinstance(ds.test, InMemoryDataset)
    assert ds.input_shape == (3, 32, 32) and ds.num_classes == 10 and ds.val is None
    assert ds.train.images.shape == (50, 3, 32, 32) and len(ds.test) == 10
    assert ds.train.labels.tolist() == [i % 10 for i in range(50)]
    raw = torch.from_numpy(cifar_batch(10, 200, seed=9)[b"data"]).view(10, 3, 32, 32)
    torch.testing.assert_close(ds.test.images, (raw.float() / 255 - MEAN) / STD)
    assert ds.test.augment_batch is None


def test_cifar_augment_batch(tmp_path: Path, make_cifar) -> None:
    make_cifar(tmp_path)
    ds = build_datasets("cifar10", root=tmp_path, val_fraction=0.2)
    aug = ds.train.augment_batch
    assert isinstance(aug, RandomCropFlip) and ds.val.augment_batch is None
    assert ds.test.augment_batch is None and len(ds.train) == 40 and len(ds.val) == 10
    batch = ds.train.images[:16]
    out1 = aug(batch, torch.Generator().manual_seed(0))
    out2 = aug(batch, torch.Generator().manual_seed(0))
    out3 = aug(batch, torch.Generator().manual_seed(1))
    assert out1.shape == batch.shape and out1.dtype == batch.dtype
    assert torch.equal(out1, out2) and not torch.equal(out1, out3)
    assert not torch.equal(out1, batch)
    # padding is a black pixel (0 before normalisation)
    black = (-MEAN / STD).view(3)
    padded = RandomCropFlip(4, fill=black.tolist())(torch.zeros(64, 3, 32, 32) + 5.0)
    border = padded[padded != 5.0]
    assert border.numel() > 0
    assert torch.isin(border, black).all()
    # single-sample path and a standard DataLoader both work
    image, label = ds.train[0]
    assert image.shape == (3, 32, 32) and isinstance(label, int)
    xb, yb = next(iter(DataLoader(ds.train, batch_size=8, shuffle=True)))
    assert xb.shape == (8, 3, 32, 32) and yb.dtype == torch.int64
    assert build_datasets("cifar10", root=tmp_path, augment=False).train.augment_batch is None


def test_random_crop_flip_matches_reference() -> None:
    x = torch.randn(12, 3, 8, 8)
    out = RandomCropFlip(2, fill=0.0)(x, torch.Generator().manual_seed(5))
    gen = torch.Generator().manual_seed(5)
    off = torch.randint(0, 5, (2, 12), generator=gen)
    flip = torch.randint(0, 2, (12,), generator=gen).bool()
    pad = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(12):
        crop = pad[i, :, off[0, i] : off[0, i] + 8, off[1, i] : off[1, i] + 8]
        torch.testing.assert_close(out[i], crop.flip(-1) if flip[i] else crop)


def test_cifar_limits(tmp_path: Path, make_cifar) -> None:
    make_cifar(tmp_path)
    ds = build_datasets("cifar10", root=tmp_path, limit_train=7, limit_test=4)
    assert isinstance(ds.train, InMemoryDataset) and len(ds.train) == 7 and len(ds.test) == 4
    assert ds.train.augment_batch is not None


@pytest.mark.parametrize(
    "content, pattern",
    [
        (b"this is not a pickle", "Cannot read"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8)}), "labels"),
        (pickle.dumps({b"data": np.zeros((2, 100), np.uint8), b"labels": [0, 1]}), "3072"),
        (pickle.dumps({b"data": np.zeros((2, 3072), np.uint8), b"labels": [0]}), "labels"),
        (pickle.dumps([1, 2, 3]), "dict"),
    ],
)
def test_cifar_corrupt(tmp_path: Path, make_cifar, content: bytes, pattern: str) -> None:
    folder = make_cifar(tmp_path)
    (folder / "data_batch_3").write_bytes(content)
    with pytest.raises(DatasetError, match=pattern) as info:
        build_datasets("cifar10", root=tmp_path)
    assert "data_batch_3" in str(info.value)


def test_cifar_missing(tmp_path: Path, make_cifar) -> None:
    folder = make_cifar(tmp_path)
    (folder / "test_batch").unlink()
    with pytest.raises(DatasetError) as info:
        build_datasets("cifar10", root=tmp_path)
    msg = str(info.value)
    assert "test_batch" in msg and "data.download=true" in msg and "data.root=" in msg


def test_cifar_download_and_extract(tmp_path: Path, make_cifar, monkeypatch) -> None:
    make_cifar(tmp_path / "src")
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(tmp_path / "src" / "cifar-10-batches-py", arcname="cifar-10-batches-py")
    blob = buf.getvalue()
    monkeypatch.setattr(cifar_mod, "ARCHIVE_MD5", hashlib.md5(blob).hexdigest())
    monkeypatch.setattr("urllib.request.urlopen", lambda url, timeout=0: io.BytesIO(blob))
    ds = build_datasets("cifar10", root=tmp_path / "dl", download=True)
    assert len(ds.train) == 50 and (tmp_path / "dl" / "cifar-10-batches-py").is_dir()


def test_cifar_batch_over_size_limit_is_refused_before_reading(
        tmp_path: Path, make_cifar, monkeypatch) -> None:
    folder = make_cifar(tmp_path, n=2)
    opened: list[str] = []
    real_open = Path.open
    monkeypatch.setattr(Path, "open", lambda self, *a, **k: opened.append(self.name)
                        or real_open(self, *a, **k))
    size = (folder / "data_batch_1").stat().st_size
    monkeypatch.setattr(cifar_mod, "MAX_BATCH_BYTES", size)  # a batch of exactly the bound loads
    images, labels = cifar_mod.load_batch(folder / "data_batch_1")
    assert images.shape == (2, 3, 32, 32) and labels.tolist() == [0, 1]
    assert opened == ["data_batch_1"]
    assert len(build_datasets("cifar10", root=tmp_path).train) == 10
    monkeypatch.setattr(cifar_mod, "MAX_BATCH_BYTES", 100)
    (folder / "data_batch_3").write_bytes(b"SECRET" * 20)  # 120 bytes: never opened
    opened.clear()
    with pytest.raises(DatasetError) as info:
        cifar_mod.load_batch(folder / "data_batch_3")
    msg = str(info.value)
    assert "data_batch_3" in msg and "120 bytes" in msg and "more than the 100" in msg
    assert "31 MB" in msg and "data.download=true" in msg and "data.root" in msg
    assert "SECRET" not in msg and opened == []


def test_cifar_batch_growing_past_size_limit_is_refused(monkeypatch) -> None:
    class Grows:  # its size says 10 bytes, but reading it gives 150
        name = "data_batch_1"

        def stat(self) -> object:
            return type("Stat", (), {"st_size": 10})()

        def open(self, mode: str) -> io.BytesIO:
            return io.BytesIO(b"x" * 150)

        def __str__(self) -> str:
            return "folder/data_batch_1"

    monkeypatch.setattr(cifar_mod, "MAX_BATCH_BYTES", 100)
    with pytest.raises(DatasetError, match=r"folder/data_batch_1 holds more than the 100 bytes"
                       r".*its size said 10"):
        cifar_mod.load_batch(Grows())  # type: ignore[arg-type]
