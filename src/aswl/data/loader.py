"""Batches of one epoch (exactly resumable order, sharded across ranks) and evaluation.

Below the trainer (:mod:`aswl.train`) and the export tools alike: scoring a model on a test set
needs no training code.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any, Protocol

import torch
from torch import Tensor, nn


class Ranks(Protocol):
    """This process's place among the ranks (:class:`aswl.train.dist.Dist` is one)."""

    rank: int
    world_size: int


def batches(dataset: Any, batch_size: int, *, shuffle: bool, seed: int, epoch: int,
            dist: Ranks | None = None, device: torch.device | str = "cpu", workers: int = 0,
            augment: bool = True, limit: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
    """Batches of one epoch; the order depends only on (seed, epoch), so resume is exact.

    In-memory datasets are sliced directly (much faster than a DataLoader on small images);
    others go through a DataLoader with worker processes and pinned memory on GPU. ``dist``
    (rank and world size, e.g. :class:`aswl.train.dist.Dist`) shards the order; None: one
    process. ``limit``: only the first ``limit`` samples of the epoch's order (a fresh random
    subset each epoch when shuffled).
    """
    device = torch.device(device)
    generator = torch.Generator().manual_seed(seed * 1_000_003 + epoch)
    count = len(dataset)
    order = torch.randperm(count, generator=generator) if shuffle else torch.arange(count)
    if limit is not None:
        order = order[:limit]
        count = len(order)
    if dist is not None and dist.world_size > 1:
        per_rank = math.ceil(count / dist.world_size)
        order = torch.cat([order, order[: per_rank * dist.world_size - count]])
        order = order[dist.rank::dist.world_size]
    if hasattr(dataset, "images"):
        augment_batch = getattr(dataset, "augment_batch", None) if augment else None
        for start in range(0, len(order), batch_size):
            index = order[start:start + batch_size]
            images = dataset.images[index]
            if augment_batch is not None:
                images = augment_batch(images, generator)
            yield (images.to(device, non_blocking=True),
                   dataset.labels[index].to(device, non_blocking=True))
        return
    loader = torch.utils.data.DataLoader(
        torch.utils.data.Subset(dataset, order.tolist()), batch_size=batch_size,
        shuffle=False, num_workers=workers, pin_memory=device.type == "cuda",
        persistent_workers=False)
    for images, labels in loader:
        yield images.to(device, non_blocking=True), labels.to(device, non_blocking=True)


def steps_per_epoch(dataset: Any, batch_size: int, dist: Ranks | None = None,
                    limit: int | None = None) -> int:
    """Batches per epoch on one rank (of ``limit`` samples per epoch when given)."""
    world_size = dist.world_size if dist is not None else 1
    count = len(dataset) if limit is None else min(len(dataset), limit)
    return math.ceil(math.ceil(count / world_size) / batch_size)


@torch.no_grad()
def evaluate(model: nn.Module, dataset: Any, batch_size: int, device: torch.device | str = "cpu",
             dist: Ranks | None = None, workers: int = 0) -> float:
    """Top-1 accuracy (fraction) over the whole ``dataset``.

    Under DDP every rank scores the whole set itself (nothing is summed across ranks): simple,
    exact, and the same number on every rank. ``dist`` is accepted for symmetry with
    :func:`batches` and not used.
    """
    device = torch.device(device)
    was_training = model.training
    model.eval()
    correct = torch.zeros(2, device=device)
    for images, labels in batches(dataset, max(batch_size, 256), shuffle=False, seed=0, epoch=0,
                                  dist=None, device=device, workers=workers, augment=False):
        logits = model(images)
        correct[0] += (logits.argmax(1) == labels).sum()
        correct[1] += labels.numel()
    model.train(was_training)
    return float(correct[0] / correct[1].clamp_min(1))
