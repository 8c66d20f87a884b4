"""ImageNet ResNet-18 and ResNet-50.

He, Zhang, Ren & Sun, "Deep Residual Learning for Image Recognition", CVPR 2016. ResNet-50
uses the "v1.5" bottleneck (stride on the 3x3 conv rather than the first 1x1), as in
torchvision and NVIDIA's reference; parameter counts match torchvision (11,689,512 and
25,557,032 with 1000 classes). Optional zero-init of each block's last BN gamma follows
Goyal et al., "Accurate, Large Minibatch SGD", 2017.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import register_model
from .resnet_cifar import (
    BasicBlock,
    PostActBlock,
    _init_resnet,
    classifier_head,
    classify,
    residual_stages,
)


class Bottleneck(PostActBlock):
    """Bottleneck v1.5: conv1x1-BN-ReLU, conv3x3(stride)-BN-ReLU, conv1x1(4x)-BN, + shortcut."""

    expansion = 4

    def __init__(self, in_planes: int, planes: int, stride: int = 1):
        out_planes = planes * self.expansion
        super().__init__(in_planes, out_planes, stride,
                         [(in_planes, planes, 1, 1), (planes, planes, 3, stride),
                          (planes, out_planes, 1, 1)])


class ImageNetResNet(nn.Module):
    """ResNet with 7x7/2 stem + 3x3/2 max pool, four stages (64-512), adaptive avgpool, fc."""

    def __init__(
        self,
        block: type[BasicBlock] | type[Bottleneck],
        layers: tuple[int, int, int, int],
        num_classes: int = 1000,
        in_channels: int = 3,
        zero_init_residual: bool = False,
    ):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(kernel_size=3, stride=2, padding=1)
        stages, in_planes = residual_stages(block, 64, (64, 128, 256, 512), layers)
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        classifier_head(self, in_planes, num_classes)
        _init_resnet(self, zero_init_residual)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        return classify(self, self.layer4(self.layer3(self.layer2(self.layer1(x)))))


@register_model("resnet18", input_shape=(3, 64, 64))
def resnet18(
    num_classes: int, input_shape: tuple[int, int, int], zero_init_residual: bool = False
) -> nn.Module:
    """ImageNet ResNet-18 (He et al. 2016), basic blocks [2, 2, 2, 2]."""
    return ImageNetResNet(BasicBlock, (2, 2, 2, 2), num_classes, input_shape[0], zero_init_residual)


@register_model("resnet50", input_shape=(3, 64, 64))
def resnet50(
    num_classes: int, input_shape: tuple[int, int, int], zero_init_residual: bool = False
) -> nn.Module:
    """ImageNet ResNet-50 v1.5 (He et al. 2016), bottlenecks [3, 4, 6, 3]."""
    return ImageNetResNet(Bottleneck, (3, 4, 6, 3), num_classes, input_shape[0], zero_init_residual)
