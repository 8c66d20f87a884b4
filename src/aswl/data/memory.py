"""In-memory tensor datasets, batched augmentation and split helpers."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor
from torch.utils.data import Dataset

BatchAugment = Callable[[Tensor, torch.Generator], Tensor]


class InMemoryDataset(Dataset):
    """A dataset held entirely in memory as tensors.

    Attributes:
        images: float32 tensor ``(N, C, H, W)``, already normalised.
        labels: int64 tensor ``(N,)``.
        augment_batch: optional batched augmentation ``f(batch, generator) -> batch``; the
            trainer may slice ``images[idx]`` and call it directly. ``__getitem__`` applies the
            same augmentation to one sample using torch's global RNG.
        classes: optional class names, index = label.
    """

    def __init__(
        self,
        images: Tensor,
        labels: Tensor,
        augment_batch: BatchAugment | None = None,
        classes: Sequence[str] | None = None,
    ) -> None:
        if images.dim() != 4:
            raise ValueError(f"images must be (N, C, H, W), got shape {tuple(images.shape)}")
        if labels.dim() != 1 or labels.shape[0] != images.shape[0]:
            raise ValueError(
                f"labels must be (N,) with N={images.shape[0]}, got shape {tuple(labels.shape)}"
            )
        self.images = images.to(torch.float32)
        self.labels = labels.to(torch.int64)
        self.augment_batch = augment_batch
        self.classes = list(classes) if classes is not None else None

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def __getitem__(self, index: int) -> tuple[Tensor, int]:
        image = self.images[index]
        if self.augment_batch is not None:
            image = self.augment_batch(image.unsqueeze(0), None)[0]  # type: ignore[arg-type]
        return image, int(self.labels[index])

    def subset(self, indices: Tensor | Sequence[int], *, augment: bool = True) -> InMemoryDataset:
        """Return a new InMemoryDataset with the selected samples (tensors are indexed).

        ``augment=False`` drops the augmentation (e.g. for a validation split).
        """
        idx = torch.as_tensor(indices, dtype=torch.long)
        return InMemoryDataset(
            self.images[idx],
            self.labels[idx],
            self.augment_batch if augment else None,
            self.classes,
        )

    def __repr__(self) -> str:
        return (
            f"InMemoryDataset(n={len(self)}, shape={tuple(self.images.shape[1:])}, "
            f"augment_batch={self.augment_batch!r})"
        )


def normalize(images: Tensor, mean: Sequence[float], std: Sequence[float]) -> Tensor:
    """Convert ``(N, C, H, W)`` images to normalised float32.

    uint8 input is first scaled by 1/255; float input is used as is.
    """
    x = images.to(torch.float32)
    if images.dtype == torch.uint8:
        x = x.div_(255.0)
    c = x.shape[1]
    m = torch.tensor(mean, dtype=torch.float32).view(1, c, 1, 1)
    s = torch.tensor(std, dtype=torch.float32).view(1, c, 1, 1)
    return x.sub_(m).div_(s)


class RandomCropFlip:
    """Batched random crop (with padding) plus random horizontal flip, fully vectorised.

    Equivalent to torchvision's ``RandomCrop(size, padding=p)`` + ``RandomHorizontalFlip()``
    applied per sample before normalisation; ``flip=False`` keeps the crop alone (random
    shifts of up to ``p`` pixels, for images whose mirror image is another class, such as
    digits). The padding value ``fill`` is per channel and defaults to 0 (i.e. pass the
    *normalised* value of a black pixel, ``-mean/std``, for images that are already
    normalised). Random numbers come from ``generator`` (torch's global RNG when None); the
    output is on the input's device.
    """

    def __init__(self, padding: int = 4, fill: Sequence[float] | float = 0.0,
                 flip: bool = True) -> None:
        self.padding = int(padding)
        self.flip = bool(flip)
        self.fill = [float(fill)] if isinstance(fill, (int, float)) else [float(v) for v in fill]

    def __call__(self, batch: Tensor, generator: torch.Generator | None = None) -> Tensor:
        n, c, h, w = batch.shape
        p = self.padding
        gen_device = generator.device if generator is not None else torch.device("cpu")
        offsets = torch.randint(0, 2 * p + 1, (2, n), generator=generator, device=gen_device)
        flip = torch.randint(0, 2, (n,), generator=generator, device=gen_device).bool()
        if not self.flip:
            flip = torch.zeros_like(flip)
        offsets, flip = offsets.to(batch.device), flip.to(batch.device)

        fill = torch.tensor(self.fill, dtype=batch.dtype, device=batch.device)
        padded = fill.view(1, -1, 1, 1).expand(n, c, h + 2 * p, w + 2 * p).clone()
        padded[:, :, p : p + h, p : p + w] = batch

        ar_h = torch.arange(h, device=batch.device)
        ar_w = torch.arange(w, device=batch.device)
        rows = offsets[0, :, None] + ar_h  # (n, h)
        cols = offsets[1, :, None] + torch.where(flip[:, None], w - 1 - ar_w, ar_w)  # (n, w)
        out = padded.gather(2, rows[:, None, :, None].expand(n, c, h, w + 2 * p))
        return out.gather(3, cols[:, None, None, :].expand(n, c, h, w))

    def __repr__(self) -> str:
        return f"RandomCropFlip(padding={self.padding}, fill={self.fill}, flip={self.flip})"


def stratified_split(labels: Tensor, fraction: float, seed: int) -> tuple[Tensor, Tensor]:
    """Split indices into (keep, held_out) with ``round(fraction * N)`` held out, stratified.

    Per-class quotas use the largest-remainder method so the total is exact; which samples are
    held out is random but deterministic from ``seed``. Both index tensors are sorted, so the
    original sample order is preserved within each part.
    """
    labels = labels.to(torch.int64)
    n = int(labels.shape[0])
    n_val = int(round(fraction * n))
    if fraction > 0:
        n_val = min(max(n_val, 1), n - 1)
    if n_val <= 0:
        return torch.arange(n), torch.empty(0, dtype=torch.long)
    gen = torch.Generator().manual_seed(int(seed))
    classes, counts = torch.unique(labels, return_counts=True)
    exact = counts.double() * (n_val / n)
    quota = exact.floor().long()
    remainder = n_val - int(quota.sum())
    if remainder > 0:
        order = torch.argsort(exact - quota.double(), descending=True, stable=True)
        quota[order[:remainder]] += 1
    held: list[Tensor] = []
    for cls, q in zip(classes.tolist(), quota.tolist(), strict=True):
        if q == 0:
            continue
        members = torch.nonzero(labels == cls).flatten()
        perm = torch.randperm(members.numel(), generator=gen)
        held.append(members[perm[:q]])
    val_idx = torch.sort(torch.cat(held)).values
    mask = torch.ones(n, dtype=torch.bool)
    mask[val_idx] = False
    return torch.nonzero(mask).flatten(), val_idx


def interleave_by_class(labels: Sequence[int] | Tensor) -> list[int]:
    """Return indices ordering samples round-robin over classes (class order, then position).

    Used for datasets stored sorted by class so that "the first N samples" are class-balanced.
    """
    labels_list = [int(v) for v in labels]
    per_class: dict[int, list[int]] = {}
    for i, lab in enumerate(labels_list):
        per_class.setdefault(lab, []).append(i)
    groups = [per_class[k] for k in sorted(per_class)]
    order: list[int] = []
    longest = max((len(g) for g in groups), default=0)
    for pos in range(longest):
        for g in groups:
            if pos < len(g):
                order.append(g[pos])
    return order
