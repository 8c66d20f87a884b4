"""CIFAR ResNets (depth 6n+2) and the pre-activation bottleneck ResNet-56 used by ASWL.

* He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR 2016 (Sec. 4.2):
  conv3x3(16) stem, three stages of n basic blocks with 16/32/64 channels, global average
  pool, fc. Downsampling shortcuts use **option B** (1x1 conv stride 2 + BN) rather than the
  paper's zero-padding option A, so every layer is an ordinary module; this adds 2,752 params
  (e.g. ResNet-20: 272,474 vs. 269,722 with option A).
* He, Zhang, Ren & Sun, "Identity Mappings in Deep Residual Networks", ECCV 2016: the
  pre-activation bottleneck ResNet-56 (6 blocks/stage, 9*6+2 = 56 layers).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from .registry import ModelError, register_model


def _init_resnet(model: nn.Module, zero_init_residual: bool) -> None:
    """Kaiming-normal convs (He et al., ICCV 2015), BN gamma=1/beta=0, optional zero last BN.

    Linear layers keep PyTorch's default init."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)
    if zero_init_residual:
        for m in model.modules():
            last = getattr(m, "last_bn", None)
            if isinstance(last, str):
                nn.init.zeros_(getattr(m, last).weight)


def projection_shortcut(in_planes: int, out_planes: int, stride: int) -> nn.Module | None:
    """Option B: a 1x1 conv (with the block's stride) and a BN where the block changes the
    shape, else None (the identity)."""
    if stride == 1 and in_planes == out_planes:
        return None
    return nn.Sequential(nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False),
                         nn.BatchNorm2d(out_planes))


def residual_stages(block: Any, in_planes: int, widths: Sequence[int],
                    depths: Sequence[int]) -> tuple[list[nn.Sequential], int]:
    """Stage i: ``depths[i]`` blocks of width ``widths[i]``, its first block downsampling
    (stride 2) except in the first stage. Returns the stages and their output channels."""
    stages = []
    for i, (planes, n) in enumerate(zip(widths, depths, strict=True)):
        blocks = []
        for j in range(n):
            blocks.append(block(in_planes, planes, 2 if (i > 0 and j == 0) else 1))
            in_planes = planes * block.expansion
        stages.append(nn.Sequential(*blocks))
    return stages, in_planes


def classifier_head(model: nn.Module, in_planes: int, num_classes: int) -> None:
    """Global average pool, flatten, fc (``model.avgpool``, ``.flatten``, ``.fc``)."""
    model.avgpool = nn.AdaptiveAvgPool2d(1)
    model.flatten = nn.Flatten()
    model.fc = nn.Linear(in_planes, num_classes)


def classify(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The head of :func:`classifier_head` on features ``x``."""
    return model.fc(model.flatten(model.avgpool(x)))


class PostActBlock(nn.Module):
    """A post-activation residual block: units conv-BN-ReLU (``conv1``, ``bn1``, ``relu1``,
    ...), the last unit's ReLU after the shortcut is added; option-B ``downsample``."""

    expansion = 1

    def __init__(self, in_planes: int, out_planes: int, stride: int,
                 units: list[tuple[int, int, int, int]]) -> None:
        """``units``: (in channels, out channels, kernel, stride) of each conv in order."""
        super().__init__()
        for i, (cin, cout, kernel, step) in enumerate(units, 1):
            setattr(self, f"conv{i}", nn.Conv2d(cin, cout, kernel, stride=step,
                                               padding=kernel // 2, bias=False))
            setattr(self, f"bn{i}", nn.BatchNorm2d(cout))
            setattr(self, f"relu{i}", nn.ReLU())
        self.units = len(units)
        self.last_bn = f"bn{self.units}"
        self.downsample = projection_shortcut(in_planes, out_planes, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = x
        for i in range(1, self.units + 1):
            out = getattr(self, f"bn{i}")(getattr(self, f"conv{i}")(out))
            if i < self.units:
                out = getattr(self, f"relu{i}")(out)
        return getattr(self, f"relu{self.units}")(out + identity)


class BasicBlock(PostActBlock):
    """Post-activation basic block: conv3x3-BN-ReLU-conv3x3-BN, + shortcut, ReLU."""

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__(in_planes, planes, stride,
                         [(in_planes, planes, 3, stride), (planes, planes, 3, 1)])


class PreActBottleneck(nn.Module):
    """Pre-activation bottleneck (He et al., ECCV 2016): BN-ReLU-conv1x1, BN-ReLU-conv3x3,
    BN-ReLU-conv1x1(4x), + shortcut. A projection shortcut (1x1 conv, no BN) takes the
    pre-activated input, as in the paper's reference code."""

    expansion = 4
    last_bn = "bn3"

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        out_planes = planes * self.expansion
        self.bn1 = nn.BatchNorm2d(in_planes)
        self.relu1 = nn.ReLU()
        self.conv1 = nn.Conv2d(in_planes, planes, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes)
        self.relu3 = nn.ReLU()
        self.conv3 = nn.Conv2d(planes, out_planes, 1, bias=False)
        self.shortcut: nn.Module | None = None
        if stride != 1 or in_planes != out_planes:
            self.shortcut = nn.Conv2d(in_planes, out_planes, 1, stride=stride, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pre = self.relu1(self.bn1(x))
        identity = x if self.shortcut is None else self.shortcut(pre)
        out = self.conv1(pre)
        out = self.conv2(self.relu2(self.bn2(out)))
        out = self.conv3(self.relu3(self.bn3(out)))
        return out + identity


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs (He et al. 2016, Sec. 4.2), option-B shortcuts; with
    ``block=PreActBottleneck`` the pre-activation bottleneck ResNet-(9n+2) (He et al., ECCV
    2016: no BN-ReLU after the stem, a final BN-ReLU before the pool). Stages of n blocks with
    ``widths`` (16/32/64; a bottleneck's outputs are 4x), global average pool, fc."""

    def __init__(
        self,
        depth: int,
        num_classes: int = 10,
        in_channels: int = 3,
        widths: tuple[int, int, int] = (16, 32, 64),
        zero_init_residual: bool = False,
        block: type[BasicBlock] | type[PreActBottleneck] = BasicBlock,
    ):
        super().__init__()
        self.preact = block is PreActBottleneck
        per_block = 9 if self.preact else 6  # layers per block, times the three stages
        if (depth - 2) % per_block != 0:
            kind = "pre-activation bottleneck ResNet" if self.preact else "CIFAR ResNet"
            raise ValueError(f"{kind} depth must be {per_block}n+2, got {depth}")
        n = (depth - 2) // per_block
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        if not self.preact:
            self.bn1 = nn.BatchNorm2d(widths[0])
            self.relu = nn.ReLU()
        stages, in_planes = residual_stages(block, widths[0], widths, (n, n, n))
        self.layer1, self.layer2, self.layer3 = stages
        if self.preact:
            self.bn = nn.BatchNorm2d(in_planes)
            self.relu = nn.ReLU()
        classifier_head(self, in_planes, num_classes)
        _init_resnet(self, zero_init_residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x) if self.preact else self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return classify(self, self.relu(self.bn(x)) if self.preact else x)


def _cifar_builder(depth: int) -> None:
    name = f"resnet{depth}"

    @register_model(name, input_shape=(3, 32, 32))
    def build(
        num_classes: int,
        input_shape: tuple[int, int, int],
        zero_init_residual: bool = False,
        width: int = 16,
    ) -> nn.Module:
        if not isinstance(width, int) or isinstance(width, bool) or width < 1:
            raise ModelError(f"model_args.width = {width!r} is invalid: expected an integer >= 1 "
                             "(the first stage's channels; the stages use width, 2x, 4x)")
        return CifarResNet(
            depth, num_classes, input_shape[0], widths=(width, 2 * width, 4 * width),
            zero_init_residual=zero_init_residual,
        )

    build.__name__ = build.__qualname__ = name
    build.__doc__ = (f"CIFAR ResNet-{depth} (He et al. 2016), basic blocks, option-B shortcuts; "
                     "model_args.width narrows or widens it (default 16).")


for _depth in (20, 32, 56, 110):
    _cifar_builder(_depth)


@register_model("resnet56_preact", input_shape=(3, 32, 32))
def resnet56_preact(
    num_classes: int, input_shape: tuple[int, int, int], zero_init_residual: bool = False
) -> nn.Module:
    """ASWL's ResNet-56: pre-activation bottlenecks, 6 per stage, widths 16/32/64 x4
    (He et al., ECCV 2016)."""
    return CifarResNet(56, num_classes, input_shape[0], zero_init_residual=zero_init_residual,
                       block=PreActBottleneck)
