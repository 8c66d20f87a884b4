"""ImageNet-style class folders decoded with PIL."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from torch.utils.data import DataLoader

from aswl.data import DatasetError, ImageFolderDataset, ImageNetTransform, build_datasets


def test_imagenet_folder(tmp_path: Path, make_image_folder) -> None:
    make_image_folder(tmp_path)
    ds = build_datasets("imagenet", root=tmp_path, image_size=32)
    assert isinstance(ds.train, ImageFolderDataset) and ds.val is None
    assert ds.num_classes == 2 and ds.input_shape == (3, 32, 32)
    assert ds.train.classes == ["n01440764", "n01443537"]
    assert len(ds.train) == 8 and len(ds.test) == 4  # notes.txt ignored, all extensions found
    assert ds.train.targets == [0, 1] * 4  # round-robin order
    image, label = ds.test[1]
    assert image.shape == (3, 32, 32) and image.dtype == torch.float32 and label == 1
    assert torch.equal(ds.test[1][0], image)  # eval transform is deterministic
    torch.manual_seed(0)
    a = ds.train[0][0]
    torch.manual_seed(0)
    assert torch.equal(ds.train[0][0], a) and a.shape == (3, 32, 32)
    xb, yb = next(iter(DataLoader(ds.train, batch_size=4)))
    assert xb.shape == (4, 3, 32, 32) and yb.tolist() == [0, 1, 0, 1]
    clone = pickle.loads(pickle.dumps(ds.train))  # picklable for worker processes
    assert len(clone) == 8 and clone.transform.train


def test_imagenet_split_limit_and_no_augment(tmp_path: Path, make_image_folder) -> None:
    make_image_folder(tmp_path / "imagenet", n_train=5)
    ds = build_datasets(
        "imagenet", root=tmp_path, image_size=24, val_fraction=0.2, seed=1, limit_test=3
    )
    assert len(ds.train) == 8 and len(ds.val) == 2 and len(ds.test) == 3
    assert not ds.val.transform.train and ds.train.transform.train
    assert sorted(ds.val.targets) == [0, 1]
    assert {p for p, _ in ds.train.samples}.isdisjoint({p for p, _ in ds.val.samples})
    again = build_datasets("imagenet", root=tmp_path, image_size=24, val_fraction=0.2, seed=1)
    assert again.val.samples == ds.val.samples
    plain = build_datasets("imagenet", root=tmp_path, augment=False, limit_train=3)
    assert len(plain.train) == 3 and not plain.train.transform.train
    assert plain.input_shape == (3, 224, 224) and plain.train[0][0].shape == (3, 224, 224)


def test_eval_transform_geometry() -> None:
    # left half black, right half white, 60x30: resize short side to 32/0.875=36 -> 72x36
    arr = np.zeros((30, 60, 3), np.uint8)
    arr[:, 30:] = 255
    out = ImageNetTransform(32, train=False, mean=(0, 0, 0), std=(1, 1, 1))(Image.fromarray(arr))
    assert out.shape == (3, 32, 32)
    assert out[:, :, :10].max() < 0.05 and out[:, :, -10:].min() > 0.95
    gray = Image.fromarray(np.full((50, 40), 128, np.uint8), mode="L")
    out = ImageNetTransform(16, train=True)(gray)
    assert out.shape == (3, 16, 16)


def test_imagenet_missing_layout(tmp_path: Path, make_image_folder) -> None:
    with pytest.raises(DatasetError, match="train/<class>"):
        build_datasets("imagenet", root=tmp_path)
    make_image_folder(tmp_path)
    for f in (tmp_path / "val").rglob("*"):
        if f.is_file():
            f.unlink()
    for d in (tmp_path / "val").iterdir():
        d.rmdir()
    with pytest.raises(DatasetError, match="no class folders"):
        build_datasets("imagenet", root=tmp_path)
    (tmp_path / "val" / "n99999999").mkdir()
    (tmp_path / "val" / "n99999999" / "a.png").write_bytes(b"x")
    with pytest.raises(DatasetError, match="absent from train"):
        build_datasets("imagenet", root=tmp_path)


def test_corrupt_image(tmp_path: Path, make_image_folder) -> None:
    make_image_folder(tmp_path)
    ds = build_datasets("imagenet", root=tmp_path, image_size=16)
    Path(ds.test.samples[0][0]).write_bytes(b"not a jpeg")
    with pytest.raises(DatasetError, match="Cannot decode image"):
        ds.test[0]
