"""Sparse inference for the whole model: CSR Conv2d/Linear equal dense within 1e-5, BatchNorm
folded, and the per-layer dense/sparse choice follows the measured times."""

import pytest
import torch
from torch import nn

from aswl.export import SparseConv2d, SparseLinear, to_sparse_inference
from aswl.models import create_model


def prune(model, density, seed=0):
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                module.weight.mul_(torch.rand(module.weight.shape, generator=generator)
                                   < density)
    return model.eval()


@pytest.mark.parametrize("kwargs", [dict(kernel_size=3, padding=1),
                                    dict(kernel_size=5),
                                    dict(kernel_size=3, stride=2, padding=2, dilation=2),
                                    dict(kernel_size=(3, 1), padding=(1, 0), bias=False)])
@pytest.mark.parametrize("batch", [1, 3])
def test_sparse_conv_matches_dense(kwargs, batch):
    torch.manual_seed(0)
    conv = prune(nn.Sequential(nn.Conv2d(4, 6, **kwargs)), 0.2)[0]
    sparse = SparseConv2d(conv)
    assert sparse.weight.values().numel() == int(torch.count_nonzero(conv.weight))
    x = torch.randn(batch, 4, 11, 9)
    with torch.no_grad():
        torch.testing.assert_close(sparse(x), conv(x), atol=1e-5, rtol=0)


@pytest.mark.parametrize("name,shape", [("lenet5", (1, 28, 28)), ("resnet20", (3, 32, 32))])
def test_whole_model_converted_equals_dense(name, shape):
    torch.manual_seed(0)
    model = prune(create_model(name, num_classes=10, input_shape=shape), 0.1)
    for module in model.modules():  # non-trivial BatchNorm statistics
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 2.0)
            module.weight.data.uniform_(0.5, 1.5)
    sparse = to_sparse_inference(model)  # every candidate sparse
    kinds = {type(m) for m in sparse.modules()}
    assert SparseConv2d in kinds and SparseLinear in kinds
    assert not any(isinstance(m, nn.BatchNorm2d) for m in sparse.modules())  # folded
    x = torch.randn(4, *shape)
    with torch.no_grad():
        torch.testing.assert_close(sparse(x), model(x), atol=1e-5, rtol=0)


def test_per_layer_choice_follows_the_measured_times():
    torch.manual_seed(0)
    model = prune(create_model("lenet5", num_classes=10, input_shape=(1, 28, 28)), 0.05)
    seen = {}

    def timer(name, dense, sparse, x):  # conv2 and fc1 "faster sparse", the others slower
        seen[name] = tuple(x.shape)
        return (1.0, 0.5) if name in ("conv2", "fc1") else (1.0, 2.0)

    x = torch.randn(7, 1, 28, 28)
    sparse = to_sparse_inference(model, example=x, timer=timer)
    assert isinstance(sparse.conv2, SparseConv2d) and isinstance(sparse.fc1, SparseLinear)
    assert type(sparse.conv1) is nn.Conv2d and type(sparse.fc2) is nn.Linear
    assert seen["conv1"] == (7, 1, 28, 28) and seen["fc1"] == (7, 800)  # real layer inputs
    choices = sparse.sparse_choices
    assert choices["conv2"]["sparse"] and not choices["conv1"]["sparse"]
    assert choices["fc2"]["dense_ms"] == 1.0 and choices["fc2"]["sparse_ms"] == 2.0
    with torch.no_grad():
        torch.testing.assert_close(sparse(x), model(x), atol=1e-5, rtol=0)


def test_measured_choice_runs_and_dense_layers_are_not_candidates():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 4)).eval()
    prune(model[1:2], 0.05)
    sparse = to_sparse_inference(model, min_sparsity=0.5, example=torch.randn(2, 4, 16),
                                 repeats=3)
    assert set(sparse.sparse_choices) == {"1"}  # layer 3 is dense: never a candidate
    assert sparse.sparse_choices["1"]["dense_ms"] > 0
