"""ImageNet-style class-folder datasets decoded with PIL (no torchvision).

Layout: ``root/train/<class>/*.JPEG`` and ``root/val/<class>/*.JPEG`` (class folders sorted by
name give the label indices; extensions .jpg/.jpeg/.png, case-insensitive). Samples are ordered
round-robin over the classes so that any prefix (``limit_train`` / ``limit_test``) is balanced.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from .errors import DatasetError
from .memory import interleave_by_class

if TYPE_CHECKING:
    from PIL import Image

logger = logging.getLogger(__name__)

MEAN = (0.485, 0.456, 0.406)
STD = (0.229, 0.224, 0.225)
EXTENSIONS = (".jpg", ".jpeg", ".png")
CROP_RATIO = 0.875  # eval: resize shorter side to size / 0.875, then centre crop

LAYOUT = "root/train/<class>/*.JPEG and root/val/<class>/*.JPEG"


def pil_image() -> Any:
    """``PIL.Image``, imported on first use (Pillow is the optional extra ``aswl[imagenet]``)."""
    try:
        from PIL import Image as pil
    except ImportError as exc:
        raise DatasetError(
            "imagenet: class-folder images are decoded with Pillow, which is not installed; "
            "install it with `pip install aswl[imagenet]` (or `pip install pillow`)."
        ) from exc
    return pil


def _uniform(low: float, high: float) -> float:
    return float(torch.empty(1).uniform_(low, high).item())


def _randint(high_inclusive: int) -> int:
    return int(torch.randint(0, high_inclusive + 1, (1,)).item())


class ImageNetTransform:
    """PIL image -> normalised float tensor ``(3, size, size)``.

    Train: random-resized crop (scale 0.08-1, ratio 3/4-4/3, bilinear) + horizontal flip, using
    torch's global RNG (seeded per DataLoader worker). Eval: resize the shorter side to
    ``int(size / 0.875)`` and centre-crop ``size``. Picklable (module level, plain attributes).
    """

    def __init__(
        self,
        image_size: int,
        train: bool,
        mean: Sequence[float] = MEAN,
        std: Sequence[float] = STD,
        scale: tuple[float, float] = (0.08, 1.0),
        ratio: tuple[float, float] = (3 / 4, 4 / 3),
    ) -> None:
        self.image_size = int(image_size)
        self.train = bool(train)
        self.mean = tuple(float(v) for v in mean)
        self.std = tuple(float(v) for v in std)
        self.scale = scale
        self.ratio = ratio

    def _crop_box(self, width: int, height: int) -> tuple[int, int, int, int]:
        """torchvision's RandomResizedCrop.get_params; returns (left, top, w, h)."""
        area = width * height
        log_ratio = (math.log(self.ratio[0]), math.log(self.ratio[1]))
        for _ in range(10):
            target_area = area * _uniform(*self.scale)
            aspect = math.exp(_uniform(*log_ratio))
            w = int(round(math.sqrt(target_area * aspect)))
            h = int(round(math.sqrt(target_area / aspect)))
            if 0 < w <= width and 0 < h <= height:
                return _randint(width - w), _randint(height - h), w, h
        in_ratio = width / height
        if in_ratio < min(self.ratio):
            w, h = width, int(round(width / min(self.ratio)))
        elif in_ratio > max(self.ratio):
            w, h = int(round(height * max(self.ratio))), height
        else:
            w, h = width, height
        return (width - w) // 2, (height - h) // 2, w, h

    def __call__(self, img: Image.Image) -> Tensor:
        size = self.image_size
        Image = pil_image()  # noqa: N806
        if img.mode != "RGB":
            img = img.convert("RGB")
        if self.train:
            left, top, w, h = self._crop_box(*img.size)
            img = img.resize((size, size), Image.BILINEAR, box=(left, top, left + w, top + h))
            if torch.rand(1).item() < 0.5:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
        else:
            short = int(size / CROP_RATIO)
            width, height = img.size
            if width <= height:
                new_w, new_h = short, int(short * height / width)
            else:
                new_w, new_h = int(short * width / height), short
            img = img.resize((new_w, new_h), Image.BILINEAR)
            top = int(round((new_h - size) / 2.0))
            left = int(round((new_w - size) / 2.0))
            img = img.crop((left, top, left + size, top + size))
        x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1)
        x = x.to(torch.float32).div_(255.0)
        m = torch.tensor(self.mean).view(3, 1, 1)
        s = torch.tensor(self.std).view(3, 1, 1)
        return x.sub_(m).div_(s)

    def __repr__(self) -> str:
        return f"ImageNetTransform(image_size={self.image_size}, train={self.train})"


class ImageFolderDataset(Dataset):
    """Class-folder image dataset: ``samples`` is a list of ``(path, label)``."""

    def __init__(
        self,
        samples: Sequence[tuple[str, int]],
        classes: Sequence[str],
        transform: ImageNetTransform,
    ) -> None:
        self.samples = list(samples)
        self.classes = list(classes)
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}
        self.transform = transform

    @property
    def targets(self) -> list[int]:
        """Labels of all samples, in order."""
        return [label for _, label in self.samples]

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        path, label = self.samples[index]
        Image = pil_image()  # noqa: N806
        try:
            with Image.open(path) as img:
                img.load()
                image = img.convert("RGB")
        except (OSError, ValueError, Image.DecompressionBombError) as exc:
            raise DatasetError(
                f"Cannot decode image {path}: {exc}. Remove or replace the file."
            ) from exc
        return self.transform(image), label

    def subset(
        self, indices: Sequence[int] | Tensor, transform: ImageNetTransform | None = None
    ) -> ImageFolderDataset:
        """Return a dataset with the selected samples (optionally a different transform)."""
        idx = [int(i) for i in indices]
        return ImageFolderDataset(
            [self.samples[i] for i in idx], self.classes, transform or self.transform
        )

    def __repr__(self) -> str:
        return (
            f"ImageFolderDataset(n={len(self)}, classes={len(self.classes)}, "
            f"transform={self.transform!r})"
        )


def _is_image(name: str) -> bool:
    return name.lower().endswith(EXTENSIONS)


def scan_split(split_dir: Path, classes: Sequence[str] | None = None) -> tuple[list[str], list]:
    """Scan ``split_dir/<class>/<image>``; return (classes, samples) with samples interleaved.

    With ``classes`` given (the train classes), folder names must be a subset of them.
    """
    if not split_dir.is_dir():
        raise DatasetError(
            f"imagenet: folder {split_dir} not found. Expected the class-folder layout {LAYOUT}. "
            "Fix: set data.root=/path/to/imagenet (ImageNet cannot be downloaded automatically; "
            "the val images must also be sorted into class folders)."
        )
    folders = sorted(e.name for e in os.scandir(split_dir) if e.is_dir())
    if not folders:
        raise DatasetError(
            f"imagenet: {split_dir} contains no class folders. Expected the layout {LAYOUT} "
            "(e.g. val/n01440764/ILSVRC2012_val_00000293.JPEG)."
        )
    if classes is None:
        classes = folders
    else:
        unknown = sorted(set(folders) - set(classes))
        if unknown:
            raise DatasetError(
                f"imagenet: {split_dir} has class folders absent from train: {unknown[:5]}; "
                "train and val must use the same class folder names."
            )
    class_to_idx = {c: i for i, c in enumerate(classes)}
    samples: list[tuple[str, int]] = []
    for name in folders:
        files = sorted(
            e.path for e in os.scandir(split_dir / name) if e.is_file() and _is_image(e.name)
        )
        if not files:
            logger.warning("imagenet: class folder %s has no images", split_dir / name)
        samples += [(f, class_to_idx[name]) for f in files]
    if not samples:
        raise DatasetError(
            f"imagenet: no images ({'/'.join(EXTENSIONS)}) found under {split_dir}/<class>/."
        )
    order = interleave_by_class([label for _, label in samples])
    return list(classes), [samples[i] for i in order]


def find_imagenet_root(root: Path) -> Path:
    """Return the folder holding ``train/`` (root itself or root/imagenet)."""
    for candidate in (root, root / "imagenet"):
        if (candidate / "train").is_dir():
            return candidate
    raise DatasetError(
        f"imagenet: no 'train' folder in {root}. Expected the class-folder layout {LAYOUT}. "
        "Fix: set data.root=/path/to/imagenet (ImageNet cannot be downloaded automatically)."
    )
