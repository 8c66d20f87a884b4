"""The contract of the channel-granularity methods: budget met, exact resume, slimmed export
equal to the masked model."""

from __future__ import annotations

import pytest
import torch
from helpers import roundtrip
from torch import Tensor, nn

import aswl
from aswl.methods import list_methods
from aswl.methods.channel import ChannelMethod
from aswl.sparse.channels import has_channel_hooks

pytest.importorskip("torch_pruning")

STEPS, HALF, TARGET = 20, 10, 0.5
NAMES = list_methods("channel")


def build(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                         nn.Conv2d(8, 12, 3, padding=1), nn.BatchNorm2d(12), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(12, 16), nn.ReLU(),
                         nn.Linear(16, 4))


def attach(name: str, seed: int) -> tuple[nn.Module, ChannelMethod, torch.optim.Optimizer]:
    model = build(seed)
    method = aswl.create_method(name, model, total_steps=STEPS, target_sparsity=TARGET,
                                structure="channel", example_inputs=torch.zeros(1, 3, 6, 6),
                                mask_interval=2)
    optimizer = torch.optim.SGD(method.weight_parameters(), lr=0.05, momentum=0.9)
    return model, method, optimizer  # type: ignore[return-value]


def data() -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(1)
    return torch.randn(STEPS, 8, 3, 6, 6, generator=gen), torch.randint(0, 4, (STEPS, 8),
                                                                        generator=gen)


@pytest.mark.parametrize("name", NAMES)
def test_channel_contract(name: str) -> None:
    check_channel_contract(name)


def check_channel_contract(name: str) -> None:
    """Build, train half, checkpoint, resume bit-exactly, finalize, meet the budget, export a
    slimmed model equal to the masked one (also run on a method registered by
    tests/methods/test_contract.py)."""
    xs, ys = data()
    model, method, optimizer = attach(name, 0)
    for i in range(HALF):
        aswl.training_step(model, method, optimizer, xs[i], ys[i])
    state = roundtrip({"model": model.state_dict(), "method": method.state_dict(),
                       "optimizer": optimizer.state_dict()})
    model2, method2, optimizer2 = attach(name, 1)
    model2.load_state_dict(state["model"])
    method2.load_state_dict(state["method"])
    optimizer2.load_state_dict(state["optimizer"])
    for i in range(HALF, STEPS):
        aswl.training_step(model, method, optimizer, xs[i], ys[i])
        aswl.training_step(model2, method2, optimizer2, xs[i], ys[i])
    method.finalize()
    method2.finalize()
    for key, mask in method.channel_masks.items():
        assert torch.equal(mask, method2.channel_masks[key]), key
    model.eval()
    model2.eval()
    with torch.no_grad():
        assert torch.equal(model(xs[0]), model2(xs[0]))
    # the budget: half the FLOPs gone, to within the coarsest channel's share
    assert abs(method.global_sparsity() - TARGET) < 0.12
    plain = method.export()
    with torch.no_grad():
        torch.testing.assert_close(plain(xs[1]), model(xs[1]), atol=1e-5, rtol=1e-4)
    assert sum(p.numel() for p in plain.parameters()) < sum(p.numel() for p in model.parameters())
    assert plain[-1].out_features == 4  # the classifier's outputs are never pruned


@pytest.mark.parametrize("name", NAMES)
def test_channel_masks_are_reported_like_weight_masks(name: str) -> None:
    """mask_state() holds the channel masks (the trainer counts their changes at finalize)."""
    xs, ys = data()
    model, method, optimizer = attach(name, 0)
    state = method.mask_state()
    assert set(state) == {g.name for g in method.groups}
    before = {k: v.clone() for k, v in state.items()}
    for i in range(STEPS):
        aswl.training_step(model, method, optimizer, xs[i], ys[i])
    assert any(not torch.equal(before[k], v) for k, v in method.mask_state().items())


def test_a_failed_prepare_leaves_the_model_without_channel_masks() -> None:
    """prepare() is the base's for channel methods too: a failure detaches what it attached."""

    class Failing(aswl.methods.channel.UniformChannels):
        def on_attach(self) -> None:
            raise RuntimeError("boom")

    model = build(0)
    method = Failing(model, total_steps=STEPS, example_inputs=torch.zeros(1, 3, 6, 6))
    with pytest.raises(RuntimeError, match="boom"):
        method.prepare()
    assert not has_channel_hooks(model) and not method.mask_state()
    aswl.create_method("l1_filter", model, total_steps=STEPS,
                       example_inputs=torch.zeros(1, 3, 6, 6))  # the model is free again
