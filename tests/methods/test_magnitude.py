"""The magnitude family's fast mask updates give the masks and weights of the plain top-k."""

from __future__ import annotations

import types

import pytest
import torch
from torch import nn

from aswl.methods import SparseMethod, create_method
from aswl.methods.magnitude import active_scores, shrink_mask
from aswl.sparse import attach_masks, dense_weight, masked_weight, topk_mask
from aswl.train.step import training_step


def _model(quantized: bool) -> nn.Module:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(40, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
                          nn.Linear(32, 4))
    if quantized:  # many equal magnitudes: ties at the threshold take the full path
        with torch.no_grad():
            for layer in (model[0], model[2], model[4]):
                layer.weight.copy_((layer.weight * 20).round() / 20)
    return model


def _run(method_name: str, reference: bool, quantized: bool) -> list[list[torch.Tensor]]:
    model = _model(quantized)
    method = create_method(method_name, model, total_steps=36, target_sparsity=0.9)
    if reference:  # the base's top-k of the scores, every step
        method.update_masks = types.MethodType(SparseMethod.update_masks, method)
    lr = 0.0 if quantized else 0.1  # quantized weights stay on their grid: ties stay
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    generator = torch.Generator().manual_seed(1)
    trace = []
    for _ in range(30):
        x = torch.randn(16, 40, generator=generator)
        y = torch.randint(0, 4, (16,), generator=generator)
        training_step(model, method, optimizer, x, y)
        trace.append([m.mask.clone() for m in method.masks.values()]
                     + [dense_weight(module).detach().clone()
                        for module in method.layers.values()])
    method.finalize()
    trace.append([m.mask.clone() for m in method.masks.values()])
    return trace


@pytest.mark.parametrize("method_name", ["gmp", "gmp_global", "lamp", "magnitude"])
@pytest.mark.parametrize("quantized", [False, True])
def test_fast_updates_equal_the_plain_top_k(method_name, quantized):
    fast, plain = _run(method_name, False, quantized), _run(method_name, True, quantized)
    for step, (a, b) in enumerate(zip(fast, plain, strict=True)):
        for x, y in zip(a, b, strict=True):
            assert torch.equal(x, y), f"step {step}"


def test_shrink_mask_cases():
    layer = nn.Linear(50, 40)
    attach_masks({"": layer}, straight_through=False)
    masked = masked_weight(layer)
    weight = dense_weight(layer)
    with torch.no_grad():
        weight.copy_(torch.randn(40, 50, generator=torch.Generator().manual_seed(0)))
    assert shrink_mask(weight, masked, 2000) is None  # keep everything: unchanged
    for keep in (1990, 1500, 1499, 1):  # small steps (fast path), a large one, down to one
        expected = topk_mask(active_scores(layer, masked.mask), keep)
        found = shrink_mask(weight, masked, keep)
        assert torch.equal(found, expected) and int(found.sum()) == keep
        masked.mask.copy_(found)
    assert shrink_mask(weight, masked, 1) is None  # the count it has: unchanged
