"""IDX streams (aswl.data.mnist): read up to the header's declared size and no further."""

from __future__ import annotations

import gzip
import struct
import tracemalloc
from pathlib import Path

import numpy as np
import pytest
from data_writers import IDX_NAMES, idx_bytes

from aswl.data import DatasetError, build_datasets, read_idx
from aswl.data import mnist as mnist_mod


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
