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


class BasicBlock(nn.Module):
    """Post-activation basic block: conv3x3-BN-ReLU-conv3x3-BN, + shortcut, ReLU."""

    expansion = 1
    last_bn = "bn2"

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.relu2 = nn.ReLU()
        self.downsample: nn.Module | None = None
        if stride != 1 or in_planes != planes:
            self.downsample = nn.Sequential(
                nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                nn.BatchNorm2d(planes),
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + identity)


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs (He et al. 2016, Sec. 4.2), option-B shortcuts."""

    def __init__(
        self,
        depth: int,
        num_classes: int = 10,
        in_channels: int = 3,
        widths: tuple[int, int, int] = (16, 32, 64),
        zero_init_residual: bool = False,
    ):
        super().__init__()
        if (depth - 2) % 6 != 0:
            raise ValueError(f"CIFAR ResNet depth must be 6n+2, got {depth}")
        n = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(widths[0])
        self.relu = nn.ReLU()
        in_planes = widths[0]
        stages = []
        for i, w in enumerate(widths):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(in_planes, w, stride))
                in_planes = w
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_planes, num_classes)
        _init_resnet(self, zero_init_residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.avgpool(x)))


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


class PreActResNetCifar(nn.Module):
    """Pre-activation bottleneck ResNet-(9n+2) for CIFAR (He et al., ECCV 2016).

    conv3x3(16) stem; stages of n bottlenecks with widths 16/32/64 (outputs 64/128/256);
    final BN-ReLU, global average pool, fc.
    """

    def __init__(
        self,
        depth: int = 56,
        num_classes: int = 10,
        in_channels: int = 3,
        widths: tuple[int, int, int] = (16, 32, 64),
        zero_init_residual: bool = False,
    ):
        super().__init__()
        if (depth - 2) % 9 != 0:
            raise ValueError(f"pre-activation bottleneck ResNet depth must be 9n+2, got {depth}")
        n = (depth - 2) // 9
        self.conv1 = nn.Conv2d(in_channels, widths[0], 3, stride=1, padding=1, bias=False)
        in_planes = widths[0]
        stages = []
        for i, w in enumerate(widths):
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(PreActBottleneck(in_planes, w, stride))
                in_planes = w * PreActBottleneck.expansion
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.bn = nn.BatchNorm2d(in_planes)
        self.relu = nn.ReLU()
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.fc = nn.Linear(in_planes, num_classes)
        _init_resnet(self, zero_init_residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.layer3(self.layer2(self.layer1(x)))
        x = self.relu(self.bn(x))
        return self.fc(self.flatten(self.avgpool(x)))


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
    return PreActResNetCifar(56, num_classes, input_shape[0], zero_init_residual=zero_init_residual)
