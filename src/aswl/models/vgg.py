"""VGG-16 with batch normalization for CIFAR-sized inputs.

Simonyan & Zisserman, "Very Deep Convolutional Networks for Large-Scale Image Recognition",
ICLR 2015; BatchNorm from Ioffe & Szegedy, ICML 2015. The CIFAR-10 variant follows the ASWL
authors: the 13 conv layers of configuration D, each conv3x3 -> BN -> ReLU, and the full
4096-4096 classifier with dropout.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import ModelError, register_model

VGG16_CFG: tuple[int | str, ...] = (
    64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512, "M",
)  # fmt: skip


class VGG(nn.Module):
    """VGG with BN feature extractor, adaptive 1x1 average pool and a 3-layer classifier."""

    def __init__(
        self,
        cfg: tuple[int | str, ...] = VGG16_CFG,
        num_classes: int = 10,
        input_shape: tuple[int, int, int] = (3, 32, 32),
        hidden: int = 4096,
        dropout: float = 0.5,
    ):
        super().__init__()
        c, h, w = input_shape
        n_pool = sum(1 for v in cfg if v == "M")
        if min(h, w) < 2**n_pool:
            raise ModelError(f"VGG needs spatial input >= {2**n_pool}, got {h}x{w}")
        layers: list[nn.Module] = []
        in_ch = c
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
            else:
                out_ch = int(v)
                layers += [
                    nn.Conv2d(in_ch, out_ch, kernel_size=3, padding=1, bias=False),
                    nn.BatchNorm2d(out_ch),
                    nn.ReLU(),
                ]
                in_ch = out_ch
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten()
        self.classifier = nn.Sequential(
            nn.Linear(in_ch, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, hidden),
            nn.ReLU(),
            nn.Dropout(dropout),
            nn.Linear(hidden, num_classes),
        )
        self._init_weights()

    def _init_weights(self) -> None:
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0.0, 0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.flatten(self.avgpool(self.features(x)))
        return self.classifier(x)


@register_model("vgg16", input_shape=(3, 32, 32))
def vgg16(
    num_classes: int,
    input_shape: tuple[int, int, int],
    hidden: int = 4096,
    dropout: float = 0.5,
) -> nn.Module:
    """VGG-16-BN for CIFAR (Simonyan & Zisserman 2015), 4096-4096 classifier as used by ASWL.

    Convs are bias-free since each is followed by BatchNorm.
    """
    return VGG(VGG16_CFG, num_classes, input_shape, hidden=hidden, dropout=dropout)
