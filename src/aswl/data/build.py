"""``build_datasets``: one entry point for every dataset, through a registry.

A dataset is a builder registered with :func:`register_dataset` (like models with
``register_model`` and methods with ``register_method``): it takes a :class:`DataRequest` and
returns :class:`Datasets`. :func:`list_datasets` names them (``aswl datasets``),
:func:`get_dataset` finds one by name.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.utils.data import Dataset

from . import cifar, imagenet, mnist
from .errors import DatasetError
from .memory import BatchAugment, InMemoryDataset, RandomCropFlip, normalize, stratified_split

logger = logging.getLogger(__name__)

MNIST_MEAN, MNIST_STD = (0.1307,), (0.3081,)
FASHION_MEAN, FASHION_STD = (0.2860,), (0.3530,)
SYSTEM_FASHION_ROOT = Path("/usr/share/datasets/fashion-mnist")  # Debian's package location
CACHE_ROOT = Path("~/.cache/aswl")

SYNTHETIC_TRAIN, SYNTHETIC_TEST = 400, 100
FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
DIGITS = tuple(str(i) for i in range(10))


@dataclass
class Datasets:
    """Train/val/test datasets plus the metadata a model needs."""

    train: Dataset
    val: Dataset | None
    test: Dataset
    num_classes: int
    input_shape: tuple[int, int, int]  # (C, H, W) of one model input


@dataclass(frozen=True)
class DataRequest:
    """What a dataset builder is asked for (checked before it is called)."""

    name: str
    root: Path
    download: bool = False
    augment: bool = True
    val_fraction: float = 0.0
    seed: int = 0
    limit_train: int | None = None
    limit_test: int | None = None
    image_size: int = 224


DatasetBuilder = Callable[[DataRequest], Datasets]
_REGISTRY: dict[str, DatasetBuilder] = {}


def _key(name: str) -> str:
    """Names match case-insensitively, with ``_`` or ``-`` or nothing between words."""
    return str(name).strip().lower().replace("_", "").replace("-", "")


def register_dataset(name: str) -> Callable[[DatasetBuilder], DatasetBuilder]:
    """Decorator registering ``fn(request: DataRequest) -> Datasets`` as dataset ``name``."""
    if not _key(name):
        raise DatasetError(f"invalid dataset name {name!r}")

    def decorator(fn: DatasetBuilder) -> DatasetBuilder:
        taken = [n for n in _REGISTRY if _key(n) == _key(name)]
        if taken and _REGISTRY[taken[0]] is not fn:
            raise DatasetError(f"dataset {name!r} is already registered (as {taken[0]!r})")
        _REGISTRY[name] = fn
        return fn

    return decorator


def list_datasets() -> list[str]:
    """Names accepted by :func:`build_datasets`, in registration order."""
    return list(_REGISTRY)


def _canonical_name(name: str) -> str:
    for known in _REGISTRY:
        if _key(known) == _key(name):
            return known
    raise DatasetError(
        f"Unknown dataset {name!r}. Valid names: {', '.join(_REGISTRY)} "
        "(set dataset= to one of them)."
    )


def get_dataset(name: str) -> DatasetBuilder:
    """The builder registered as ``name`` (e.g. ``Fashion_MNIST`` finds ``fashion-mnist``)."""
    return _REGISTRY[_canonical_name(name)]


def default_root(name: str) -> Path:
    """Default data folder: Debian's Fashion-MNIST folder if present, else ~/.cache/aswl/<name>."""
    if name == "fashion-mnist" and SYSTEM_FASHION_ROOT.is_dir():
        return SYSTEM_FASHION_ROOT
    return (CACHE_ROOT / name).expanduser()


def make_synthetic(seed: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """Deterministic learnable random data: 10 class prototypes plus Gaussian noise, 1x28x28."""
    gen = torch.Generator().manual_seed(int(seed))
    prototypes = torch.randn(10, 1, 28, 28, generator=gen)

    def draw(n: int) -> tuple[Tensor, Tensor]:
        labels = torch.arange(n) % 10
        noise = torch.randn(n, 1, 28, 28, generator=gen)
        return 0.5 * prototypes[labels] + noise, labels

    train_x, train_y = draw(SYNTHETIC_TRAIN)
    test_x, test_y = draw(SYNTHETIC_TEST)
    return train_x, train_y, test_x, test_y


MAX_IMAGE_SIZE = 4096
"""Largest crop side of ImageNet-style images (data.image_size)."""


def _check_args(
    val_fraction: float, limit_train: int | None, limit_test: int | None, image_size: int
) -> None:
    if not 0.0 <= float(val_fraction) < 1.0:
        raise DatasetError(f"val_fraction must be in [0, 1), got {val_fraction}.")
    for label, value in (("limit_train", limit_train), ("limit_test", limit_test)):
        if value is not None and (isinstance(value, bool) or int(value) != value or value < 1):
            raise DatasetError(f"{label} must be a positive integer or None, got {value!r}.")
    if not 1 <= int(image_size) <= MAX_IMAGE_SIZE:
        raise DatasetError(f"image_size must be an integer in [1, {MAX_IMAGE_SIZE}], got "
                           f"{image_size}.")


def _in_memory(
    raw: tuple[Tensor, Tensor, Tensor, Tensor],
    mean: Sequence[float],
    std: Sequence[float],
    train_augment: BatchAugment | None,
    classes: Sequence[str],
    val_fraction: float,
    seed: int,
    limit_train: int | None,
    limit_test: int | None,
) -> tuple[InMemoryDataset, InMemoryDataset | None, InMemoryDataset]:
    """Split/limit the raw tensors first, then normalise only what is kept."""
    train_x, train_y, test_x, test_y = raw
    val = None
    if val_fraction > 0:
        keep, held = stratified_split(train_y, val_fraction, seed)
        val = InMemoryDataset(normalize(train_x[held], mean, std), train_y[held], None, classes)
        train_x, train_y = train_x[keep], train_y[keep]
    if limit_train is not None:
        train_x, train_y = train_x[:limit_train], train_y[:limit_train]
    if limit_test is not None:
        test_x, test_y = test_x[:limit_test], test_y[:limit_test]
    train = InMemoryDataset(normalize(train_x, mean, std), train_y, train_augment, classes)
    test = InMemoryDataset(normalize(test_x, mean, std), test_y, None, classes)
    return train, val, test


def _build_imagenet(request: DataRequest) -> Datasets:
    """ImageNet-style class folders (``train/``, ``val/``), read from disk per sample."""
    root, augment, val_fraction, seed = (request.root, request.augment, request.val_fraction,
                                         request.seed)
    limit_train, limit_test, image_size = (request.limit_train, request.limit_test,
                                           request.image_size)
    if request.download:
        logger.warning("imagenet cannot be downloaded automatically; using %s as is", root)
    imagenet.pil_image()  # fail before scanning when Pillow is missing
    base = imagenet.find_imagenet_root(root)
    classes, train_samples = imagenet.scan_split(base / "train")
    _, test_samples = imagenet.scan_split(base / "val", classes)
    eval_tf = imagenet.ImageNetTransform(image_size, train=False)
    train_tf = imagenet.ImageNetTransform(image_size, train=True) if augment else eval_tf
    train = imagenet.ImageFolderDataset(train_samples, classes, train_tf)
    val = None
    if val_fraction > 0:
        keep, held = stratified_split(torch.tensor(train.targets), val_fraction, seed)
        val = train.subset(held, eval_tf)
        train = train.subset(keep)
    if limit_train is not None:
        train = train.subset(range(min(limit_train, len(train))))
    test = imagenet.ImageFolderDataset(test_samples, classes, eval_tf)
    if limit_test is not None:
        test = test.subset(range(min(limit_test, len(test))))
    return Datasets(train, val, test, len(classes), (3, image_size, image_size))


def _memory_sets(request: DataRequest, raw: tuple[Tensor, Tensor, Tensor, Tensor],
                 mean: Sequence[float], std: Sequence[float], classes: Sequence[str],
                 train_augment: BatchAugment | None) -> Datasets:
    train, val, test = _in_memory(raw, mean, std, train_augment, classes, request.val_fraction,
                                  request.seed, request.limit_train, request.limit_test)
    c, h, w = train.images.shape[1:] if len(train) else test.images.shape[1:]
    return Datasets(train, val, test, len(classes), (int(c), int(h), int(w)))


def _digits_like(request: DataRequest, raw: tuple[Tensor, Tensor, Tensor, Tensor],
                 mean: Sequence[float], std: Sequence[float],
                 classes: Sequence[str]) -> Datasets:
    """28x28 grey-scale sets: training augmentation is a random shift of up to 2 pixels (no
    flip: digits)."""
    shift = RandomCropFlip(padding=2, fill=-mean[0] / std[0], flip=False) \
        if request.augment else None
    return _memory_sets(request, raw, mean, std, classes, shift)


# Registration order is the order `aswl datasets` lists them in.
@register_dataset("mnist-embedded")
def _mnist_embedded(request: DataRequest) -> Datasets:
    """The 5,000-image MNIST subset packaged with aswl (root is not used)."""
    return _digits_like(request, mnist.load_mnist_embedded(), MNIST_MEAN, MNIST_STD, DIGITS)


@register_dataset("mnist")
def _mnist(request: DataRequest) -> Datasets:
    """MNIST from IDX files in ``root``."""
    raw = mnist.load_idx_dataset("mnist", request.root, request.download)
    return _digits_like(request, raw, MNIST_MEAN, MNIST_STD, DIGITS)


@register_dataset("fashion-mnist")
def _fashion_mnist(request: DataRequest) -> Datasets:
    """Fashion-MNIST from IDX files in ``root``."""
    raw = mnist.load_idx_dataset("fashion-mnist", request.root, request.download)
    return _digits_like(request, raw, FASHION_MEAN, FASHION_STD, FASHION_CLASSES)


@register_dataset("cifar10")
def _cifar10(request: DataRequest) -> Datasets:
    """CIFAR-10 from its pickle batches; training augmentation is random crop and flip."""
    raw, mean, std = cifar.load_cifar10(request.root, request.download), cifar.MEAN, cifar.STD
    crop_flip = None
    if request.augment:
        black = [-m / s for m, s in zip(mean, std, strict=True)]
        crop_flip = RandomCropFlip(padding=4, fill=black)
    return _memory_sets(request, raw, mean, std, cifar.CLASSES, crop_flip)


register_dataset("imagenet")(_build_imagenet)


@register_dataset("synthetic")
def _synthetic(request: DataRequest) -> Datasets:
    """Random learnable data for tests (from ``seed``; no augmentation)."""
    return _memory_sets(request, make_synthetic(request.seed), (0.0,), (1.0,), DIGITS, None)


def build_datasets(
    name: str,
    root: str | os.PathLike[str] | None = None,
    *,
    download: bool = False,
    augment: bool = True,
    val_fraction: float = 0.0,
    seed: int = 0,
    limit_train: int | None = None,
    limit_test: int | None = None,
    image_size: int = 224,
) -> Datasets:
    """Build train/val/test datasets for ``name`` (see :func:`list_datasets`).

    Args:
        name: dataset name (case-insensitive; ``_`` accepted for ``-``).
        root: data folder; None uses :func:`default_root`. Ignored for mnist-embedded/synthetic.
        download: fetch missing files from the official mirrors (not for imagenet).
        augment: enable training augmentation (MNIST family: shifts of up to 2 pixels, no
            flip; CIFAR-10 crop+flip, ImageNet random crop+flip).
        val_fraction: fraction of the train set held out (stratified, from ``seed``) as ``val``,
            evaluated without augmentation; 0 gives ``val=None``.
        seed: seed of the val split (and of the synthetic data).
        limit_train / limit_test: keep only the first N train / test samples (after the split).
        image_size: model input size for imagenet.

    Raises:
        DatasetError: unknown name, bad argument, or missing/corrupt files (message says how to
            fix it).
    """
    key = _canonical_name(name)
    _check_args(val_fraction, limit_train, limit_test, image_size)
    path = Path(root).expanduser() if root is not None else default_root(key)
    val_fraction = float(val_fraction)

    result = _REGISTRY[key](DataRequest(key, path, download, augment, val_fraction, seed,
                                        limit_train, limit_test, int(image_size)))

    for split, part in (("train", result.train), ("test", result.test)):
        if len(part) == 0:
            raise DatasetError(
                f"{key}: the {split} split is empty (0 samples) in {path}; point data.root at "
                "the full dataset files (and check data.val_fraction)."
            )
    logger.info(
        "Dataset %s: train=%d val=%s test=%d classes=%d input=%s",
        key,
        len(result.train),
        len(result.val) if result.val is not None else None,
        len(result.test),
        result.num_classes,
        result.input_shape,
    )
    return result
