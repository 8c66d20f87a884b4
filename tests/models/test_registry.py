"""Every registered model: build, attach ASWL, train a step, export with exact zeros."""

import pytest
import torch

from aswl.methods import create_method
from aswl.models import create_model, default_input_shape, list_models
from aswl.train.step import training_step

# seconds each: the full suite (-m "") runs them
SLOW = {"vgg16", "resnet50", "resnet18", "resnet110", "resnet56", "resnet56_preact"}


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n in SLOW else n
                                  for n in list_models()])
def test_model_trains_with_aswl_and_exports(name):
    torch.manual_seed(0)
    shape = default_input_shape(name)
    model = create_model(name, num_classes=10, input_shape=shape)
    method = create_method("aswl", model, total_steps=2, target_sparsity=0.8, mask_interval=1)
    optimizer = torch.optim.SGD(method.weight_parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(4, *shape)
    y = torch.tensor([1, 3, 0, 2])
    for _ in range(2):
        loss = training_step(model, method, optimizer, x, y).loss
    assert torch.isfinite(loss)
    method.finalize()
    model.eval()
    plain = method.export()
    assert torch.allclose(plain(x), model(x), atol=1e-4)
    assert abs(method.global_sparsity() - 0.8) < len(method.layers) / method.total_numel + 1e-6
    for layer in method.layers:
        weight = plain.get_submodule(layer).weight
        assert int(torch.count_nonzero(weight)) == method.kept[layer]
