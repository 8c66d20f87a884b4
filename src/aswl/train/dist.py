"""Distributed helpers: the process group that ``torchrun`` describes, and the device.

Under DDP every rank computes the same masks from the same all-reduced gradients, and the
mask buffers are broadcast from rank 0 at every forward (DDP's buffer sync).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from aswl.train.launch import LaunchError, join_group, read_launch

__all__ = ["Dist", "LaunchError", "TrainingError", "resolve_device", "setup_distributed"]


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
    """Join the process group that ``torchrun`` describes in the environment, if any (the
    variables are checked first: :func:`aswl.train.launch.read_launch`)."""
    import torch.distributed as dist

    ready = dist.is_available() and dist.is_initialized()
    launch = read_launch(group_ready=ready)
    if not launch.world_size > 1:
        return Dist()
    if not ready:
        cuda = device_name.startswith("cuda") or (device_name == "auto"
                                                  and torch.cuda.is_available())
        join_group(launch, "nccl" if cuda else "gloo")
    return Dist(launch.rank, launch.world_size, launch.local_rank, owns_group=not ready)


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
