"""The contract every registered method keeps: exact final sparsity, exact resume, clean export."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from helpers import roundtrip
from torch import Tensor, nn
from torch.nn.utils import parametrize

from aswl.methods import (
    GradualConfig,
    SparseMethod,
    create_method,
    list_methods,
    method_for,
    registry,
)
from aswl.methods.channel import ChannelMethod
from aswl.methods.registry import register_method
from aswl.sparse import dense_weight
from aswl.train.step import training_step

TARGET = 0.8
STEPS = 30
HALF = 15
OWN_TARGET: dict[str, float | None] = {"aswl_paper": None, "dense": 0.0}
"""Methods without a target: None skips the sparsity check, a number is their own target."""


def build(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(),
                         nn.Linear(16, 4))


def data() -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(STEPS, 16, 20, generator=gen), torch.randint(0, 4, (STEPS, 16),
                                                                    generator=gen)


def attach(name: str, seed: int) -> tuple[nn.Module, SparseMethod, torch.optim.Optimizer]:
    model = build(seed)
    target = {} if OWN_TARGET.get(name) == 0.0 else {"target_sparsity": TARGET}  # dense: none
    method = create_method(name, model, total_steps=STEPS, **target)
    optimizer = torch.optim.SGD(method.weight_parameters(), lr=0.05, momentum=0.9,
                                weight_decay=1e-4)
    return model, method, optimizer


def train(model: nn.Module, method: SparseMethod, optimizer: torch.optim.Optimizer,
          xs: Tensor, ys: Tensor, start: int, stop: int) -> None:
    for i in range(start, stop):
        training_step(model, method, optimizer, xs[i], ys[i])


def masks_of(method: SparseMethod) -> dict[str, Tensor]:
    return {name: p.mask.clone() for name, p in method.masks.items()}


def assert_same(a: nn.Module, ma: SparseMethod, b: nn.Module, mb: SparseMethod,
                x: Tensor) -> None:
    for name, mask in masks_of(ma).items():
        assert torch.equal(mask, mb.masks[name].mask), name
    with torch.no_grad():
        assert torch.equal(a(x), b(x))


def test_every_baseline_is_registered() -> None:
    assert {"aswl", "dense", "magnitude", "imp", "gmp", "gmp_global", "dpf",
            "snip", "rigl", "lamp"} <= set(list_methods())


WEIGHT_METHODS = list_methods("weight")
"""Channel-granularity methods keep their own contract (tests/methods/test_contract_channels.py)."""


@pytest.mark.parametrize("name", WEIGHT_METHODS)
def test_contract(name: str) -> None:
    check_contract(name)


def check_contract(name: str) -> None:
    """Checkpoint mid-training, bit-exact resume, exact final sparsity, round trip after
    finalize, clean export."""
    xs, ys = data()
    model, method, optimizer = attach(name, seed=0)
    train(model, method, optimizer, xs, ys, 0, HALF)

    # checkpoint mid-training: build -> attach -> load into a differently initialised model
    state = roundtrip({"model": model.state_dict(), "method": method.state_dict(),
                       "optimizer": optimizer.state_dict()})
    model2, method2, optimizer2 = attach(name, seed=1)
    model2.load_state_dict(state["model"])
    method2.load_state_dict(state["method"])
    optimizer2.load_state_dict(state["optimizer"])
    assert method2.step_count == method.step_count
    assert_same(model, method, model2, method2, xs[0])

    # both continue identically (the method state is complete)
    train(model, method, optimizer, xs, ys, HALF, STEPS)
    train(model2, method2, optimizer2, xs, ys, HALF, STEPS)
    method.finalize()
    method2.finalize()
    assert_same(model, method, model2, method2, xs[0])

    # exact final sparsity, to within one weight per layer
    expected = OWN_TARGET.get(name, TARGET)
    kept = sum(int(p.mask.sum()) for p in method.masks.values())
    if expected is not None:
        assert abs(kept - (1 - expected) * method.total_numel) <= len(method.layers)
        assert abs(method.global_sparsity() - expected) <= len(method.layers) / method.total_numel

    # round trip after finalize
    state = roundtrip({"model": model.state_dict(), "method": method.state_dict()})
    model3, method3, _ = attach(name, seed=2)
    model3.load_state_dict(state["model"])
    method3.load_state_dict(state["method"])
    assert_same(model, method, model3, method3, xs[1])

    # export: plain module, same outputs, pruned weights exact zeros
    plain = method.export()
    assert not any(parametrize.is_parametrized(m) for m in plain.modules())
    model.eval()
    with torch.no_grad():
        torch.testing.assert_close(plain(xs[2]), model(xs[2]), atol=1e-5, rtol=0)
    nonzero = 0
    for layer_name, mask in masks_of(method).items():
        weight = plain.get_submodule(layer_name).weight
        assert type(weight) is nn.Parameter
        assert torch.all(weight[~mask] == 0)
        nonzero += int((weight != 0).sum())
    assert nonzero <= kept
    # the trained model itself still works after export
    assert parametrize.is_parametrized(model[0])


@pytest.mark.parametrize("name", WEIGHT_METHODS)
def test_state_and_finalize_go_through_the_one_base_entry(name: str) -> None:
    """load_state_dict and finalize are the base's (methods extend _load and _finalize), and
    the attributes the machinery reads are declared at construction."""
    cls = method_for(name, "weight")
    for klass in cls.__mro__[:-2]:  # up to SparseMethod
        if klass is SparseMethod:
            break
        assert "load_state_dict" not in vars(klass) and "finalize" not in vars(klass), klass
    _, method, _ = attach(name, 0)
    assert (method.nonfinite_steps, method.warned_untrained, method.step_hooks) == (0, False, ())


@pytest.fixture
def registered_here() -> Iterator[dict[str, str]]:
    """One method of each granularity registered from this file, each overriding one
    documented hook; the registry is as before afterwards."""
    saved = dict(registry.METHODS), set(registry.ALIASES)
    try:
        @register_method("test_weight_x")
        class FarFromMean(SparseMethod):
            """Gradual pruning of the weights nearest their layer's mean."""

            config_class = GradualConfig

            def scores(self, name: str, module: nn.Module) -> Tensor:
                weight = dense_weight(module).detach()
                return (weight - weight.mean()).abs()

        @register_method("test_channel_x", structure="channel")
        class InputNorms(ChannelMethod):
            """Channels ranked by the L1 norm of the weights that read them."""

            def scores(self, name: str, group: Any) -> Tensor:  # one score per channel
                return self._norms(group, sides=("in",), power=1)

        yield {"weight": "test_weight_x", "channel": "test_channel_x"}
    finally:
        registry.METHODS.clear()
        registry.METHODS.update(saved[0])
        registry.ALIASES.clear()
        registry.ALIASES.update(saved[1])
    assert "test_weight_x" not in list_methods() and "test_channel_x" not in list_methods()


@pytest.mark.parametrize("structure", ["weight", "channel"])
def test_a_method_registered_here_keeps_the_contract(registered_here: dict[str, str],
                                                     structure: str) -> None:
    """A new method of either granularity, one hook overridden, passes the same checks as the
    registered ones (tests/methods/test_contract_channels.py for channel methods)."""
    name = registered_here[structure]
    assert method_for(name, structure).structure == structure
    if structure == "weight":
        assert name in list_methods("weight")
        check_contract(name)
        return
    pytest.importorskip("torch_pruning")
    from .test_contract_channels import check_channel_contract

    assert name in list_methods("channel")
    check_channel_contract(name)
