"""A compact MobileNetV2-style network for small (28x28, 32x32) images.

Inverted residual blocks (Sandler et al. 2018, "MobileNetV2: Inverted Residuals and Linear
Bottlenecks"): a 1x1 expansion, a 3x3 depthwise conv, a linear 1x1 projection, a residual
sum where the shape allows. The ImageNet stem's early strides are dropped for small inputs
(stride 1 stem, three stride-2 stages: 32x32 -> 4x4) and the stages are shortened, the usual
CIFAR adaptation. ``width`` scales every layer's channels (rounded to multiples of 8).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from .registry import ModelError, register_model

STAGES = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 2, 2), (6, 64, 2, 2), (6, 96, 1, 1))
"""(expansion t, output channels c, blocks n, first stride s) per stage."""


def _divisible(value: float, divisor: int = 8) -> int:
    return max(divisor, int(value + divisor / 2) // divisor * divisor)


def _conv_bn(cin: int, cout: int, kernel: int, stride: int = 1, groups: int = 1,
             act: bool = True) -> list[nn.Module]:
    layers: list[nn.Module] = [nn.Conv2d(cin, cout, kernel, stride, kernel // 2,
                                         groups=groups, bias=False), nn.BatchNorm2d(cout)]
    return layers + [nn.ReLU6()] if act else layers


class InvertedResidual(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int, expansion: int) -> None:
        super().__init__()
        hidden = cin * expansion
        layers = _conv_bn(cin, hidden, 1) if expansion != 1 else []
        layers += _conv_bn(hidden, hidden, 3, stride, groups=hidden)
        layers += _conv_bn(hidden, cout, 1, act=False)
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.block(x)
        return x + out if self.residual else out


class MobileNetV2Cifar(nn.Module):
    def __init__(self, num_classes: int = 10, in_channels: int = 3, width: float = 1.0,
                 last: int = 256) -> None:
        super().__init__()
        cin = _divisible(32 * width)
        layers: list[nn.Module] = _conv_bn(in_channels, cin, 3)
        for expansion, channels, blocks, stride in STAGES:
            cout = _divisible(channels * width)
            for i in range(blocks):
                layers.append(InvertedResidual(cin, cout, stride if i == 0 else 1, expansion))
                cin = cout
        layers += _conv_bn(cin, _divisible(last * max(1.0, width)), 1)
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(_divisible(last * max(1.0, width)), num_classes)
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)).flatten(1))


@register_model("mobilenetv2_cifar", input_shape=(3, 32, 32))
def mobilenetv2_cifar(num_classes: int = 10, input_shape: tuple[int, int, int] = (3, 32, 32),
                      width: Any = 1.0) -> nn.Module:
    """Compact MobileNetV2 for 32x32 inputs (28x28 works too); ``width``: channel
    multiplier (0.25 to 4)."""
    if isinstance(width, bool) or not isinstance(width, (int, float)) or \
            not 0.25 <= width <= 4:
        raise ModelError(f"model_args.width = {width!r} is invalid: expected a number in "
                         "[0.25, 4] (the channel multiplier)")
    if min(input_shape[1:]) < 8:
        raise ModelError(f"mobilenetv2_cifar needs spatial input >= 8x8, got {input_shape}")
    return MobileNetV2Cifar(num_classes, input_shape[0], float(width))
