import torch
from torch import nn

from aswl.export import SparseLinear, to_sparse_inference


def test_sparse_linear_matches_dense_and_keeps_only_nonzeros():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(12, 8), nn.ReLU(), nn.Linear(8, 3))
    with torch.no_grad():
        model[1].weight.mul_(torch.rand(8, 12) > 0.9)  # ~90% zeros
    sparse = to_sparse_inference(model, min_sparsity=0.7)
    assert isinstance(sparse[1], SparseLinear) and isinstance(sparse[3], nn.Linear)
    assert sparse[1].weight.values().numel() == int(torch.count_nonzero(model[1].weight))
    x = torch.randn(5, 3, 4)
    with torch.no_grad():
        assert torch.allclose(sparse(x), model(x), atol=1e-6)
