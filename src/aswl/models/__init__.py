"""Model zoo for sparse training: LeNets, VGG-16-BN, CIFAR and ImageNet ResNets, a compact
MobileNetV2.

Build models with :func:`create_model`; ``tv:NAME`` and ``timm:NAME`` fall back to torchvision
and timm (optional extras ``aswl[vision]`` / ``aswl[timm]``). Every weight layer is an ordinary
``nn.Conv2d`` / ``nn.Linear`` submodule and all ReLUs are non-inplace, so sparsifiers can
address layers by ``named_modules()`` name and attach forward hooks safely.
"""

from __future__ import annotations

from . import lenet, mobilenet, resnet_cifar, resnet_imagenet, vgg  # noqa: F401  (register models)
from .registry import (
    MAX_INPUT_VALUES,
    ModelError,
    check_input_shape,
    create_model,
    default_input_shape,
    list_models,
    register_model,
)

__all__ = [
    "MAX_INPUT_VALUES",
    "ModelError",
    "check_input_shape",
    "create_model",
    "default_input_shape",
    "list_models",
    "register_model",
]
