"""Datasets for aswl: ``build_datasets(name, ...)`` returns train/val/test splits.

Names: ``mnist-embedded`` (a real 5,000-image MNIST subset packaged with aswl; fixed split: per
class the first 400 images train, last 100 test -> 4,000/1,000), ``mnist``, ``fashion-mnist``
(IDX files), ``cifar10`` (pickle batches), ``imagenet`` (class folders) and ``synthetic``
(random, for tests).
Each is a builder registered with :func:`register_dataset` (``aswl datasets`` lists them);
add one the same way. All but imagenet are :class:`InMemoryDataset` (normalised float
tensors + optional batched augmentation). Every sample is ``(float tensor (C, H, W), int label)``.
"""

from .build import (
    DataRequest,
    Datasets,
    build_datasets,
    default_root,
    get_dataset,
    list_datasets,
    register_dataset,
)
from .errors import DatasetError
from .imagenet import ImageFolderDataset, ImageNetTransform
from .memory import InMemoryDataset, RandomCropFlip
from .mnist import read_idx

__all__ = [
    "DataRequest",
    "DatasetError",
    "Datasets",
    "ImageFolderDataset",
    "ImageNetTransform",
    "InMemoryDataset",
    "RandomCropFlip",
    "build_datasets",
    "default_root",
    "get_dataset",
    "list_datasets",
    "read_idx",
    "register_dataset",
]
