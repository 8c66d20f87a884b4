"""Sparse inference: Linear layers whose weight is a CSR matrix.

On a CPU, a CSR matrix product beats the dense one once a layer is sparse enough (measure with
``benchmarks/inference.py``); convolutions stay dense (PyTorch has no sparse convolution kernel).
"""

from __future__ import annotations

import copy
import warnings

import torch
from torch import Tensor, nn


class SparseLinear(nn.Module):
    """``y = x W^T + b`` with ``W`` stored in CSR; only the nonzero weights are kept."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        with warnings.catch_warnings():  # "CSR support is in beta": we use only mm
            warnings.simplefilter("ignore", UserWarning)
            csr = linear.weight.detach().to_sparse_csr()
        self.weight = nn.Parameter(csr, requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(),
                                                                  requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        flat = x.reshape(-1, self.in_features)
        out = torch.sparse.mm(self.weight, flat.t()).t()
        if self.bias is not None:
            out = out + self.bias
        return out.reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        nonzero = self.weight.values().numel()
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"nonzero={nonzero} ({nonzero / (self.in_features * self.out_features):.1%})")


def to_sparse_inference(model: nn.Module, min_sparsity: float = 0.7) -> nn.Module:
    """A copy of an exported (plain) model with every Linear at least ``min_sparsity`` sparse
    replaced by :class:`SparseLinear`. For inference only (no gradients)."""
    model = copy.deepcopy(model).eval()
    for module in list(model.modules()):
        for child_name, child in list(module.named_children()):
            if not isinstance(child, nn.Linear):
                continue
            sparsity = 1.0 - int(torch.count_nonzero(child.weight)) / child.weight.numel()
            if sparsity >= min_sparsity:
                setattr(module, child_name, SparseLinear(child))
    return model
