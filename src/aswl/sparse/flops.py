"""Dense FLOPs per layer, counted on one forward pass (the mask engine and the reports share
it: channel mode sets its budget in these units)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn


def layer_flops(model: nn.Module, layer_names: list[str],
                input_shape: tuple[int, ...]) -> dict[str, int]:
    """Dense FLOPs per sample of each named Conv/Linear layer, counted as
    ``torch.utils.flop_counter`` counts them: 2 per multiply-accumulate, bias adds not counted.
    """
    flops: dict[str, int] = {}
    hooks = []

    def make_hook(name: str):
        def hook(module: nn.Module, inputs: Any, output: torch.Tensor) -> None:
            weight = module.weight
            if isinstance(module, nn.Linear):
                positions = output[0].numel() // module.out_features
            elif isinstance(module, nn.modules.conv._ConvTransposeNd):
                # every input position scatters through out/groups * kernel weights
                positions = math.prod(inputs[0].shape[2:])
            else:  # convolution: every output position uses in/groups * kernel weights
                positions = math.prod(output.shape[2:])
            flops[name] = 2 * int(weight.numel() * positions)  # 2 FLOPs per MAC

        return hook

    for name in layer_names:
        hooks.append(model.get_submodule(name).register_forward_hook(make_hook(name)))
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            model(torch.zeros(1, *input_shape, device=device))
    finally:
        model.train(was_training)
        for hook in hooks:
            hook.remove()
    return flops
