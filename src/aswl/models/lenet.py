"""LeNet models for MNIST-sized inputs.

* LeNet-300-100: LeCun et al., "Gradient-based learning applied to document recognition",
  Proc. IEEE 1998; the pruning benchmark of Han et al., "Learning both Weights and Connections
  for Efficient Neural Networks", NeurIPS 2015.
* LeNet-5 "20-50-500": the Caffe variant (``examples/mnist/lenet_train_test.prototxt``) used
  by Han et al. 2015.
"""

from __future__ import annotations

import torch
from torch import nn

from .registry import ModelError, register_model


class LeNet300(nn.Module):
    """LeNet-300-100: 3 fully connected layers (C*H*W -> 300 -> 100 -> classes)."""

    def __init__(self, num_classes: int = 10, input_shape: tuple[int, int, int] = (1, 28, 28)):
        super().__init__()
        c, h, w = input_shape
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(c * h * w, 300)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(300, 100)
        self.relu2 = nn.ReLU()
        self.fc3 = nn.Linear(100, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.fc1(self.flatten(x)))
        x = self.relu2(self.fc2(x))
        return self.fc3(x)


class LeNet5(nn.Module):
    """Caffe LeNet-5 "20-50-500" (431,080 params for 1x28x28 input and 10 classes).

    conv5x5(20) -> maxpool2 -> conv5x5(50) -> maxpool2 -> fc(500) -> ReLU -> fc(classes).
    Faithful to Caffe's ``lenet_train_test.prototxt``: there is *no* nonlinearity after the
    convolutions (max pooling is the only one); the single ReLU follows the first FC layer.
    """

    def __init__(self, num_classes: int = 10, input_shape: tuple[int, int, int] = (1, 28, 28)):
        super().__init__()
        c, h, w = input_shape
        fh, fw = ((h - 4) // 2 - 4) // 2, ((w - 4) // 2 - 4) // 2
        if fh < 1 or fw < 1:
            raise ModelError(f"lenet5 needs spatial input >= 12x12, got {h}x{w}")
        self.conv1 = nn.Conv2d(c, 20, kernel_size=5)
        self.pool1 = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(20, 50, kernel_size=5)
        self.pool2 = nn.MaxPool2d(2, 2)
        self.flatten = nn.Flatten()
        self.fc1 = nn.Linear(50 * fh * fw, 500)
        self.relu1 = nn.ReLU()
        self.fc2 = nn.Linear(500, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.pool1(self.conv1(x))
        x = self.pool2(self.conv2(x))
        x = self.relu1(self.fc1(self.flatten(x)))
        return self.fc2(x)


@register_model("lenet300", input_shape=(1, 28, 28))
def lenet300(num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """LeNet-300-100 (LeCun et al. 1998; Han et al. 2015)."""
    return LeNet300(num_classes, input_shape)


@register_model("lenet5", input_shape=(1, 28, 28))
def lenet5(num_classes: int, input_shape: tuple[int, int, int]) -> nn.Module:
    """Caffe LeNet-5 20-50-500 (LeCun et al. 1998; Han et al. 2015)."""
    return LeNet5(num_classes, input_shape)
