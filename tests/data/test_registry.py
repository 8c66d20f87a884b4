"""The datasets registry: builders by name, like models and methods."""

from __future__ import annotations

import pytest
import torch

from aswl.data import (
    DataRequest,
    DatasetError,
    Datasets,
    InMemoryDataset,
    build_datasets,
    get_dataset,
    list_datasets,
    register_dataset,
)
from aswl.data import build as build_module


@pytest.fixture
def registry():
    saved = dict(build_module._REGISTRY)
    yield
    build_module._REGISTRY.clear()
    build_module._REGISTRY.update(saved)


def test_shipped_datasets_are_registered_in_order():
    assert list_datasets()[:6] == ["mnist-embedded", "mnist", "fashion-mnist", "cifar10",
                                   "imagenet", "synthetic"]
    assert get_dataset("Fashion_MNIST") is get_dataset("fashion-mnist")
    with pytest.raises(DatasetError, match="Valid names: mnist-embedded"):
        get_dataset("nope")


def test_a_registered_dataset_is_built_by_name(registry):
    @register_dataset("tiny-blobs")
    def tiny(request: DataRequest) -> Datasets:
        images = torch.full((8, 1, 4, 4), float(request.seed))
        labels = torch.arange(8) % 2
        part = InMemoryDataset(images, labels, None, ("a", "b"))
        return Datasets(part, None, part, 2, (1, 4, 4))

    assert "tiny-blobs" in list_datasets()
    data = build_datasets("Tiny_Blobs", seed=3)
    assert data.num_classes == 2 and float(data.train.images[0, 0, 0, 0]) == 3.0
    with pytest.raises(DatasetError, match="already registered"):
        register_dataset("tiny_blobs")(lambda request: None)
