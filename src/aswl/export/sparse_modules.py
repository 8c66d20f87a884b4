"""Sparse inference for a whole exported model: CSR Linear and Conv2d layers, chosen per layer.

:class:`SparseLinear` computes ``W x + b`` with ``W`` in CSR (one fused ``addmm``).
:class:`SparseConv2d` lowers a convolution to the same product: ``unfold`` (im2col) of the input,
then the CSR weight (out x in*kh*kw) times the columns. Either is exact up to float summation
order (outputs equal dense within 1e-5).

:func:`to_sparse_inference` swaps layers. Given an example batch, it times each candidate layer
dense and sparse on its real input (interleaved repeats, medians) and keeps the sparse version
only where it is faster, so the converted model is never slower than the dense one at that batch
size; BatchNorm layers that follow a convolution are folded into it first (zeros stay zeros).
"""

from __future__ import annotations

import copy
import logging
import random
import statistics
import time
import warnings
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

log = logging.getLogger(__name__)


def _to_csr(weight: Tensor) -> Tensor:
    """CSR copy of a 2-D weight, with int32 indices where they fit (about 10% faster)."""
    with warnings.catch_warnings():  # "CSR support is in beta": we use only addmm / mm
        warnings.simplefilter("ignore", UserWarning)
        csr = weight.detach().to_sparse_csr()
        if csr.values().numel() < 2**31 - 1 and max(csr.shape) < 2**31 - 1:
            csr = torch.sparse_csr_tensor(csr.crow_indices().to(torch.int32),
                                          csr.col_indices().to(torch.int32), csr.values(),
                                          csr.shape)
        return csr


def _csr_product(weight: Tensor, bias: Tensor | None, columns: Tensor) -> Tensor:
    """``weight @ columns + bias[:, None]`` with ``weight`` in CSR."""
    if bias is None:
        return torch.sparse.mm(weight, columns)
    return torch.addmm(bias.unsqueeze(1), weight, columns)


class SparseLinear(nn.Module):
    """``y = x W^T + b`` with ``W`` stored in CSR; only the nonzero weights are kept."""

    def __init__(self, linear: nn.Linear) -> None:
        super().__init__()
        self.in_features = linear.in_features
        self.out_features = linear.out_features
        self.weight = nn.Parameter(_to_csr(linear.weight), requires_grad=False)
        self.bias = None if linear.bias is None else nn.Parameter(linear.bias.detach().clone(),
                                                                  requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        shape = x.shape
        out = _csr_product(self.weight, self.bias, x.reshape(-1, self.in_features).t())
        return out.t().reshape(*shape[:-1], self.out_features)

    def extra_repr(self) -> str:
        nonzero = self.weight.values().numel()
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"nonzero={nonzero} ({nonzero / (self.in_features * self.out_features):.1%})")


def conv_supported(conv: nn.Conv2d) -> bool:
    """Whether :class:`SparseConv2d` can replace ``conv`` (groups 1, zero or no padding)."""
    return (type(conv) is nn.Conv2d and conv.groups == 1 and conv.padding_mode == "zeros"
            and not isinstance(conv.padding, str))


class SparseConv2d(nn.Module):
    """A 2-D convolution as ``unfold`` (im2col) followed by a CSR weight product."""

    def __init__(self, conv: nn.Conv2d) -> None:
        super().__init__()
        if not conv_supported(conv):
            raise ValueError("SparseConv2d needs groups=1 and zero padding given as numbers")
        self.in_channels, self.out_channels = conv.in_channels, conv.out_channels
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.dilation = conv.padding, conv.dilation
        self.weight = nn.Parameter(_to_csr(conv.weight.reshape(conv.out_channels, -1)),
                                   requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach().clone(),
                                                                requires_grad=False)

    def forward(self, x: Tensor) -> Tensor:
        (kh, kw), (sh, sw), (dh, dw), (ph, pw) = (self.kernel_size, self.stride, self.dilation,
                                                  self.padding)
        batch, channels, height, width = x.shape
        height, width = height + 2 * ph, width + 2 * pw
        # batch-last copy of the (padded) input: each im2col row is then copied in runs of
        # out_w * batch contiguous floats instead of out_w
        if ph or pw:
            padded = x.new_zeros(channels, height, width, batch)
            padded[:, ph:height - ph, pw:width - pw] = x.permute(1, 2, 3, 0)
        else:
            padded = x.permute(1, 2, 3, 0).contiguous()
        out_h = (height - dh * (kh - 1) - 1) // sh + 1
        out_w = (width - dw * (kw - 1) - 1) // sw + 1
        row = width * batch
        columns = padded.as_strided(
            (channels, kh, kw, out_h, out_w, batch),
            (height * row, dh * row, dw * batch, sh * row, sw * batch, 1)).reshape(
            channels * kh * kw, -1)
        out = _csr_product(self.weight, self.bias, columns)
        return out.reshape(self.out_channels, out_h, out_w, batch).permute(3, 0, 1, 2)

    def extra_repr(self) -> str:
        nonzero = self.weight.values().numel()
        total = self.weight.shape[0] * self.weight.shape[1]
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, nonzero={nonzero} "
                f"({nonzero / total:.1%})")


def fold_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of an eval-mode model with each Conv2d -> BatchNorm2d pair folded into one Conv2d
    (via ``torch.fx``); the model itself (a copy) if it cannot be traced."""
    model = copy.deepcopy(model).eval()
    if not any(isinstance(m, nn.BatchNorm2d) for m in model.modules()):
        return model
    try:
        with warnings.catch_warnings():  # the import warns about torch.jit deprecations
            warnings.simplefilter("ignore", DeprecationWarning)
            from torch.fx.experimental.optimization import fuse

        return fuse(model, inplace=False)
    except Exception as err:  # untraceable control flow: keep BatchNorm as is
        log.info("BatchNorm not folded (model not traceable by torch.fx: %s)", err)
        return model


def _sparse_version(module: nn.Module) -> nn.Module | None:
    if type(module) is nn.Linear:
        return SparseLinear(module)
    if isinstance(module, nn.Conv2d) and conv_supported(module):
        return SparseConv2d(module)
    return None


def default_clock() -> Callable[[], float]:
    """CPU time of this process with one intra-op thread (on a shared machine wall time also
    counts the time spent waiting for a core), wall time with several."""
    return time.process_time if torch.get_num_threads() == 1 else time.perf_counter


ALLOCATOR_WARMUP_BYTES = 31 << 20
"""The block :func:`warm_allocator` frees (glibc raises its threshold to at most 32 MiB)."""


def warm_allocator() -> None:
    """Free one large block before timing on a CPU. glibc's malloc serves a block over its
    mmap threshold (128 KiB when a process starts) with fresh pages from the kernel, and
    raises the threshold to the size of each such block freed (up to 32 MiB): until a process
    has freed a block as large as a layer's output, every call of that layer pays the page
    faults of its output (a 1->16 3x3 conv at batch 64 on 28x28 maps took 4.5 ms before, 0.55
    ms after, measured here), so a layer's time depended on what the process had run before.
    A serving process is in the warm state after its first forward passes; timing starts
    there. Elsewhere (another allocator, a GPU) this costs one allocation."""
    block = torch.empty(ALLOCATOR_WARMUP_BYTES, dtype=torch.uint8)
    del block


def interleaved_ms(fns: dict[str, Callable[[], Any]], repeats: int,
                   clock: Callable[[], float] | None = None) -> dict[str, float]:
    """Median ms of each function, called in turn ``repeats`` times after a warm-up (and
    :func:`warm_allocator`); the order is shuffled every round so that no function always
    runs after the same one (the one before leaves the caches in its own state)."""
    clock = clock or default_clock()
    warm_allocator()
    times: dict[str, list[float]] = {name: [] for name in fns}
    for fn in fns.values():
        for _ in range(3):
            fn()
    order, shuffler = list(fns), random.Random(0)
    for _ in range(repeats):
        shuffler.shuffle(order)
        for name in order:
            start = clock()
            fns[name]()
            times[name].append((clock() - start) * 1000)
    return {name: statistics.median(values) for name, values in times.items()}


def time_pair(dense: nn.Module, sparse: nn.Module, x: Tensor,
              repeats: int = 25) -> tuple[float, float]:
    """Median ms of ``dense(x)`` and ``sparse(x)`` (:func:`interleaved_ms`)."""
    with torch.no_grad():
        ms = interleaved_ms({"dense": lambda: dense(x), "sparse": lambda: sparse(x)}, repeats)
    return ms["dense"], ms["sparse"]


Timer = Callable[[str, nn.Module, nn.Module, Tensor], tuple[float, float]]


def _layer_inputs(model: nn.Module, names: list[str], example: Tensor) -> dict[str, Tensor]:
    inputs: dict[str, Tensor] = {}

    def keeper(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: tuple, output: Tensor) -> None:
            inputs.setdefault(name, args[0].detach())

        return hook

    hooks = [model.get_submodule(name).register_forward_hook(keeper(name)) for name in names]
    try:
        with torch.no_grad():
            model(example)
    finally:
        for hook in hooks:
            hook.remove()
    return inputs


def to_sparse_inference(model: nn.Module, min_sparsity: float = 0.5,
                        example: Tensor | None = None, repeats: int = 25,
                        timer: Timer | None = None, fold_bn: bool = True) -> nn.Module:
    """A copy of an exported (plain) model for inference, Linear and Conv2d layers at least
    ``min_sparsity`` sparse replaced by their CSR versions.

    With ``example`` (a batch of the size you will run), each candidate is timed dense and
    sparse on its real input and replaced only where sparse is faster; the choices are in the
    returned model's ``sparse_choices`` (name -> dense_ms, sparse_ms, sparsity, sparse).
    ``timer(name, dense, sparse, x)`` replaces :func:`time_pair` (tests). Without ``example``, every
    candidate is replaced. For inference only (no gradients)."""
    model = fold_batchnorm(model) if fold_bn else copy.deepcopy(model).eval()
    candidates: dict[str, nn.Module] = {}
    for name, module in model.named_modules():
        if not name or not isinstance(module, (nn.Linear, nn.Conv2d)):
            continue
        weight = module.weight
        sparsity = 1.0 - int(torch.count_nonzero(weight)) / weight.numel()
        if sparsity >= min_sparsity and _sparse_version(module) is not None:
            candidates[name] = module
    inputs = _layer_inputs(model, list(candidates), example) if example is not None else {}
    choices: dict[str, dict[str, Any]] = {}
    for name, module in candidates.items():
        sparse = _sparse_version(module)
        weight = module.weight
        choice: dict[str, Any] = {
            "type": type(module).__name__,
            "sparsity": 1.0 - int(torch.count_nonzero(weight)) / weight.numel(),
            "sparse": True}
        if example is not None:
            if name not in inputs:  # not reached by the example: leave it dense
                continue
            x = inputs[name]
            dense_ms, sparse_ms = (timer or (lambda n, d, s, t: time_pair(d, s, t, repeats)))(
                name, module, sparse, x)
            choice.update(dense_ms=dense_ms, sparse_ms=sparse_ms, sparse=sparse_ms < dense_ms)
        choices[name] = choice
        if choice["sparse"]:
            parent_name, _, child = name.rpartition(".")
            setattr(model.get_submodule(parent_name), child, sparse)
    model.sparse_choices = choices
    return model
