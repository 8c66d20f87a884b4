"""Distributed helpers: the process group that ``torchrun`` describes, and the device.

Under DDP every rank computes the same masks from the same all-reduced gradients, and the
mask buffers are broadcast from rank 0 at every forward (DDP's buffer sync).
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch


class TrainingError(RuntimeError):
    """Training cannot go on (non-finite loss, unusable resume state, no device, ...)."""


@dataclass
class Dist:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    owns_group: bool = False
    """The process group was created here (and is destroyed at the end of ``fit``)."""

    @property
    def main(self) -> bool:
        return self.rank == 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1


def setup_distributed(device_name: str) -> Dist:
    """Join the process group that ``torchrun`` describes in the environment, if any."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    if world_size <= 1:
        return Dist()
    import torch.distributed as dist

    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    owns_group = not dist.is_initialized()
    if owns_group:
        cuda = device_name.startswith("cuda") or (device_name == "auto"
                                                  and torch.cuda.is_available())
        backend = "nccl" if cuda else "gloo"
        dist.init_process_group(backend=backend)
    return Dist(rank, world_size, local_rank, owns_group)


def resolve_device(name: str, dist: Dist) -> torch.device:
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name.startswith("cuda"):
        if not torch.cuda.is_available():
            raise TrainingError("device = cuda but no CUDA device is available; "
                                "use --set device=cpu")
        if name == "cuda":
            name = f"cuda:{dist.local_rank}" if dist.enabled else "cuda"
        torch.cuda.set_device(torch.device(name))
    return torch.device(name)
