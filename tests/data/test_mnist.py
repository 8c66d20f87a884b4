"""MNIST / Fashion-MNIST from tiny IDX files (plain and gzipped); IDX streams are read up to
the header's declared size and no further."""

from __future__ import annotations

import gzip
import hashlib
import io
import struct
import tracemalloc
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch
from data_writers import IDX_NAMES, idx_bytes, write_idx

from aswl.data import DatasetError, InMemoryDataset, build_datasets, read_idx
from aswl.data import mnist as mnist_mod


def _ids(ds: InMemoryDataset, mean: float = 0.1307, std: float = 0.3081) -> list[int]:
    """Recover the constant pixel value (= sample id) of each image."""
    raw = (ds.images[:, 0, 0, 0] * std + mean) * 255
    return [int(v) for v in raw.round()]


@pytest.mark.parametrize("gz", [False, True])
def test_mnist_idx_loads(tmp_path: Path, make_idx_dataset, gz: bool) -> None:
    arrays = make_idx_dataset(tmp_path, gz=gz)
    ds = build_datasets("mnist", root=str(tmp_path))
    assert isinstance(ds.train, InMemoryDataset) and isinstance(ds.test, InMemoryDataset)
    assert ds.val is None and ds.num_classes == 10 and ds.input_shape == (1, 28, 28)
    assert ds.train.images.shape == (20, 1, 28, 28) and ds.train.images.dtype == torch.float32
    assert ds.train.labels.dtype == torch.int64
    assert ds.train.labels.tolist() == arrays["train_labels"].tolist()
    assert ds.test.labels.tolist() == arrays["test_labels"].tolist()
    expected = (torch.from_numpy(arrays["train_images"]).float() / 255 - 0.1307) / 0.3081
    torch.testing.assert_close(ds.train.images[:, 0], expected)
    assert ds.train.augment_batch is not None and ds.test.augment_batch is None
    image, label = ds.train[3]
    assert image.shape == (1, 28, 28) and isinstance(label, int) and label == 3


@pytest.mark.parametrize("sub", ["fashion-mnist", "raw"])
def test_fashion_subfolder_and_own_stats(tmp_path: Path, make_idx_dataset, sub: str) -> None:
    arrays = make_idx_dataset(tmp_path / sub, gz=True)
    ds = build_datasets("fashion-mnist", root=tmp_path)
    expected = (torch.from_numpy(arrays["test_images"]).float() / 255 - 0.2860) / 0.3530
    torch.testing.assert_close(ds.test.images[:, 0], expected)


def test_mixed_plain_and_gz(tmp_path: Path) -> None:
    write_idx(tmp_path / IDX_NAMES["train_images"], np.zeros((4, 28, 28), np.uint8), gz=True)
    write_idx(tmp_path / IDX_NAMES["train_labels"], np.arange(4, dtype=np.uint8))
    write_idx(tmp_path / IDX_NAMES["test_images"], np.zeros((2, 28, 28), np.uint8))
    write_idx(tmp_path / IDX_NAMES["test_labels"], np.arange(2, dtype=np.uint8), gz=True)
    ds = build_datasets("mnist", root=tmp_path)
    assert len(ds.train) == 4 and len(ds.test) == 2


def test_val_split_and_limits(tmp_path: Path, make_idx_dataset) -> None:
    make_idx_dataset(tmp_path, n_train=40)
    a = build_datasets("mnist", root=tmp_path, val_fraction=0.25, seed=3)
    b = build_datasets("mnist", root=tmp_path, val_fraction=0.25, seed=3)
    c = build_datasets("mnist", root=tmp_path, val_fraction=0.25, seed=4)
    assert isinstance(a.val, InMemoryDataset) and a.val.augment_batch is None
    assert len(a.train) == 30 and len(a.val) == 10
    train_ids, val_ids = _ids(a.train), _ids(a.val)
    assert set(train_ids).isdisjoint(val_ids) and set(train_ids) | set(val_ids) == set(range(40))
    assert train_ids == sorted(train_ids)  # original order kept
    assert torch.bincount(a.val.labels, minlength=10).tolist() == [1] * 10  # stratified
    assert _ids(b.val) == val_ids and torch.equal(b.train.images, a.train.images)
    assert _ids(c.val) != val_ids
    # labels follow their images through the split
    assert [i % 10 for i in val_ids] == a.val.labels.tolist()

    lim = build_datasets(
        "mnist", root=tmp_path, val_fraction=0.25, seed=3, limit_train=5, limit_test=3
    )
    assert isinstance(lim.train, InMemoryDataset) and isinstance(lim.test, InMemoryDataset)
    assert _ids(lim.train) == train_ids[:5] and len(lim.test) == 3 and len(lim.val) == 10
    assert len(build_datasets("mnist", root=tmp_path, limit_train=1000).train) == 40


def test_read_idx_other_dtypes(tmp_path: Path) -> None:
    arr = np.arange(12, dtype=">i4").reshape(3, 4)
    head = bytes([0, 0, 0x0C, 2]) + np.array([3, 4], ">u4").tobytes()
    (tmp_path / "x.idx").write_bytes(head + arr.tobytes())
    out = read_idx(tmp_path / "x.idx")
    assert out.shape == (3, 4) and out.tolist() == arr.tolist()


def test_bad_magic(tmp_path: Path, make_idx_dataset) -> None:
    make_idx_dataset(tmp_path)
    path = tmp_path / IDX_NAMES["train_images"]
    data = bytearray(path.read_bytes())
    data[0:4] = b"\x12\x34\x08\x03"
    path.write_bytes(bytes(data))
    with pytest.raises(DatasetError, match="(?i)magic") as info:
        build_datasets("mnist", root=tmp_path)
    assert "train-images-idx3-ubyte" in str(info.value) and "data.download" in str(info.value)


def test_wrong_dimensionality(tmp_path: Path, make_idx_dataset) -> None:
    make_idx_dataset(tmp_path)
    write_idx(tmp_path / IDX_NAMES["test_labels"], np.zeros((10, 28, 28), np.uint8))
    with pytest.raises(DatasetError, match="t10k-labels-idx1-ubyte.*dimensions"):
        build_datasets("mnist", root=tmp_path)


@pytest.mark.parametrize("gz", [False, True])
def test_truncated(tmp_path: Path, make_idx_dataset, gz: bool) -> None:
    make_idx_dataset(tmp_path, gz=gz)
    name = IDX_NAMES["train_images"] + (".gz" if gz else "")
    path = tmp_path / name
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    with pytest.raises(DatasetError) as info:
        build_datasets("mnist", root=tmp_path)
    assert name in str(info.value)
    if not gz:
        assert "truncated" in str(info.value)


def test_count_mismatch(tmp_path: Path, make_idx_dataset) -> None:
    make_idx_dataset(tmp_path)
    write_idx(tmp_path / IDX_NAMES["train_labels"], np.zeros(19, np.uint8))
    with pytest.raises(DatasetError, match="Count mismatch.*train-images.*20.*19"):
        build_datasets("mnist", root=tmp_path)


def test_bad_label_values(tmp_path: Path, make_idx_dataset) -> None:
    make_idx_dataset(tmp_path)
    write_idx(tmp_path / IDX_NAMES["test_labels"], np.full(10, 12, np.uint8))
    with pytest.raises(DatasetError, match="t10k-labels.*0..9"):
        build_datasets("mnist", root=tmp_path)


def test_missing_files_message(tmp_path: Path, make_idx_dataset) -> None:
    make_idx_dataset(tmp_path)
    (tmp_path / IDX_NAMES["test_labels"]).unlink()
    with pytest.raises(DatasetError) as info:
        build_datasets("mnist", root=tmp_path)
    msg = str(info.value)
    assert "t10k-labels-idx1-ubyte" in msg and str(tmp_path) in msg
    assert "data.download=true" in msg and "data.root=" in msg


def test_download_failure_is_dataset_error(tmp_path: Path, monkeypatch) -> None:
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr("urllib.request.urlopen", offline)
    with pytest.raises(DatasetError, match="(?i)download.*failed"):
        build_datasets("mnist", root=tmp_path / "dl", download=True)
    assert not list((tmp_path / "dl").glob("*.part"))


def test_download_success(tmp_path: Path, monkeypatch) -> None:
    payload = {
        IDX_NAMES["train_images"]: np.zeros((6, 28, 28), np.uint8),
        IDX_NAMES["train_labels"]: np.arange(6, dtype=np.uint8),
        IDX_NAMES["test_images"]: np.ones((3, 28, 28), np.uint8),
        IDX_NAMES["test_labels"]: np.arange(3, dtype=np.uint8),
    }
    blobs = {k + ".gz": gzip.compress(idx_bytes(v)) for k, v in payload.items()}
    md5 = {k: hashlib.md5(v).hexdigest() for k, v in blobs.items()}
    monkeypatch.setitem(mnist_mod.MD5, "mnist", md5)
    urls: list[str] = []

    def fake_urlopen(url: str, timeout: float = 0):
        urls.append(url)
        return io.BytesIO(blobs[url.rsplit("/", 1)[1]])

    monkeypatch.setattr("urllib.request.urlopen", fake_urlopen)
    ds = build_datasets("mnist", root=tmp_path, download=True)
    assert len(ds.train) == 6 and len(ds.test) == 3
    assert all(u.startswith("https://ossci-datasets.s3.amazonaws.com/mnist/") for u in urls)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(blobs)


def test_a_gzip_stream_longer_than_its_header_stops_at_the_declared_size(tmp_path: Path):
    path = tmp_path / "x.gz"
    zeros = b"\0" * (64 << 20)  # 64 MiB after a header that declares 2 x 28 x 28 bytes
    path.write_bytes(gzip.compress(idx_bytes(np.zeros((2, 28, 28), np.uint8)) + zeros, 1))
    tracemalloc.start()
    try:
        with pytest.raises(DatasetError, match="more data than its header announces") as info:
            read_idx(path, expected_ndim=3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert str(path) in str(info.value)
    assert peak < 8 << 20  # never decompressed beyond the declared size


@pytest.mark.parametrize("gz", [False, True])
def test_trailing_bytes_after_the_declared_data_are_an_error(tmp_path: Path, gz: bool):
    data = idx_bytes(np.zeros((3, 2, 2), np.uint8)) + b"junk"
    path = tmp_path / "x.idx"
    path.write_bytes(gzip.compress(data) if gz else data)
    with pytest.raises(DatasetError, match="more data than its header"):
        read_idx(path)


def test_a_declared_size_over_the_limit_is_refused_before_reading(tmp_path: Path, monkeypatch):
    path = tmp_path / "x.idx"
    path.write_bytes(bytes([0, 0, 0x08, 3]) + struct.pack(">3I", 60000, 28, 28))
    monkeypatch.setattr(mnist_mod, "MAX_IDX_BYTES", 1000)
    with pytest.raises(DatasetError, match=r"declares \(60000, 28, 28\) \(47,040,000 data bytes"):
        read_idx(path)


def test_float_labels_are_refused_not_truncated(tmp_path: Path, make_idx_dataset):
    make_idx_dataset(tmp_path)
    labels = np.arange(20, dtype=">f4") % 10 + 0.5
    head = bytes([0, 0, 0x0D, 1]) + struct.pack(">I", 20)
    (tmp_path / IDX_NAMES["train_labels"]).write_bytes(head + labels.tobytes())
    with pytest.raises(DatasetError, match="train-labels-idx1-ubyte holds float32 values, "
                       "expected integers"):
        build_datasets("mnist", root=tmp_path)


def test_image_files_of_another_dtype_are_refused_from_the_header(tmp_path: Path,
                                                                 make_idx_dataset):
    make_idx_dataset(tmp_path)
    head = bytes([0, 0, 0x0C, 3]) + struct.pack(">3I", 20, 28, 28)  # int32, no data
    (tmp_path / IDX_NAMES["train_images"]).write_bytes(head)
    with pytest.raises(DatasetError, match="holds int32 values, expected unsigned bytes"):
        build_datasets("mnist", root=tmp_path)
