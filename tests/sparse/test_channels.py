"""Channel granularity: coupled groups, masks, budget, slimmed export."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

import aswl
from aswl.methods import ConfigError, MethodStateError
from aswl.sparse.channels import cost_model, find_groups, fit_budget

pytest.importorskip("torch_pruning")

CHANNEL_METHODS = ["aswl", "l1_filter", "slimming", "group_norm"]


class Block(nn.Module):
    """Residual block with an identity shortcut: conv2's outputs are tied to the input's."""

    def __init__(self, width: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(out)) + x)


class HeldOutNet(nn.Module):
    """A net the project never saw: BN, a residual block, depthwise + pointwise convs, a
    Linear head after flatten."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 12, 3, padding=1)
        self.stem_bn = nn.BatchNorm2d(12)
        self.block = Block(12)
        self.depthwise = nn.Conv2d(12, 12, 3, padding=1, groups=12)
        self.dw_bn = nn.BatchNorm2d(12)
        self.pointwise = nn.Conv2d(12, 20, 1)
        self.pool = nn.AdaptiveAvgPool2d(2)
        self.hidden = nn.Linear(80, 24)
        self.head = nn.Linear(24, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.stem_bn(self.stem(x)))
        x = self.block(x)
        x = torch.relu(self.dw_bn(self.depthwise(x)))
        x = torch.relu(self.pointwise(x))
        x = self.pool(x).flatten(1)
        return self.head(torch.relu(self.hidden(x)))


def example() -> torch.Tensor:
    return torch.zeros(1, 3, 8, 8)


def train(name: str, seed: int = 0, steps: int = 12, target: float = 0.5,
          **options) -> tuple[nn.Module, aswl.SparseMethod]:
    torch.manual_seed(seed)
    model = HeldOutNet()
    method = aswl.create_method(name, model, total_steps=steps, structure="channel",
                                example_inputs=example(), target_sparsity=target,
                                mask_interval=2, **options)
    optimizer = torch.optim.SGD(method.weight_parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(1)
    for _ in range(steps):
        x = torch.randn(8, 3, 8, 8, generator=gen)
        y = torch.randint(0, 5, (8,), generator=gen)
        aswl.training_step(model, method, optimizer, x, y)
    method.finalize()
    return model, method


def test_residual_block_channels_share_one_group() -> None:
    model = HeldOutNet()
    groups = find_groups(model, example(), {n: m for n, m in model.named_modules()
                                            if isinstance(m, (nn.Conv2d, nn.Linear))})
    tied = [g for g in groups if "block.conv2" in g.producers]
    assert len(tied) == 1
    group = tied[0]
    # the stem, the block's second conv (added to the stem's output) and the depthwise conv
    # (which follows its input) are one set of channels
    assert {"stem", "block.conv2", "depthwise"} <= set(group.producers)
    assert {"block.conv1", "pointwise"} <= set(group.consumers)
    assert "head" not in {p for g in groups for p in g.producers}  # the classifier's outputs
    # the masks multiply the BatchNorm outputs, never a conv that feeds a BatchNorm
    points = {p.module: p.first for p in group.mask_points}
    assert "stem" not in points and "stem_bn" in points
    # the first mask on each path is at each producer's own BatchNorm; the depthwise conv
    # reads channels masked already, so its BatchNorm's mask comes after one
    assert points["stem_bn"] and points["block.bn2"] and not points["dw_bn"]


def test_masked_channels_get_no_gradient() -> None:
    """No activation after the convs (LeNet-5): a straight-through gradient into masked
    filters has no feedback, their weights drift and come back large; here they stay put."""
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.MaxPool2d(2),
                          nn.Conv2d(8, 8, 3, padding=1), nn.Flatten(), nn.Linear(128, 5))
    method = aswl.create_method("l1_filter", model, total_steps=4, target_sparsity=0.5,
                                example_inputs=torch.zeros(1, 3, 8, 8), mask_interval=1,
                                ramp_end=0.25)
    optimizer = torch.optim.SGD(method.weight_parameters(), lr=0.5)
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 5, (8,))
    aswl.training_step(model, method, optimizer, x, y)  # the ramp ends: masks frozen
    masked = ~method.channel_masks["0"]
    assert masked.any()
    before = model[0].weight.detach()[masked].clone()
    for _ in range(3):
        optimizer.zero_grad()
        aswl.training_step(model, method, optimizer, x, y)
    assert torch.equal(model[0].weight.detach()[masked], before)


@pytest.mark.parametrize("name", CHANNEL_METHODS)
def test_slimmed_export_equals_masked_model(name: str) -> None:
    model, method = train(name)
    model.eval()
    plain = method.export()
    x = torch.randn(16, 3, 8, 8)
    with torch.no_grad():
        masked, slimmed = model(x), plain(x)
    assert torch.allclose(masked, slimmed, rtol=1e-4, atol=1e-5 * float(masked.abs().max()))
    dense = sum(p.numel() for p in HeldOutNet().parameters())
    assert sum(p.numel() for p in plain.parameters()) < dense
    assert plain.stem.out_channels == int(method.channel_masks["stem"].sum())
    assert plain.block.conv1.out_channels == int(method.channel_masks["block.conv1"].sum())
    assert plain.hidden.out_features == int(method.channel_masks["hidden"].sum())
    assert 0.4 < method.global_sparsity() < 0.6


def test_masked_channels_are_exact_zeros_and_keep_their_dense_weights() -> None:
    model, method = train("l1_filter")
    mask = method.channel_masks["stem"]
    assert not bool(mask.all())
    outputs = {}
    model.stem_bn.register_forward_hook(lambda m, i, o: outputs.setdefault("bn", o))
    model.eval()
    with torch.no_grad():
        model(torch.randn(2, 3, 8, 8))
    assert torch.count_nonzero(outputs["bn"][:, ~mask]) == 0
    assert torch.count_nonzero(model.stem.weight[~mask]) > 0  # dense weights kept


def test_budget_projection_meets_the_flops_target() -> None:
    model = HeldOutNet()
    layers = {n: m for n, m in model.named_modules() if isinstance(m, (nn.Conv2d, nn.Linear))}
    groups = find_groups(model, example(), layers)
    costs = {n: float(m.weight.numel()) for n, m in layers.items()}
    model_cost = cost_model(groups, costs)
    sizes = torch.tensor([float(g.size) for g in groups], dtype=torch.float64)
    raw = torch.linspace(0.2, 1.0, len(groups), dtype=torch.float64)
    density = fit_budget(raw, 1.0 / sizes, model_cost, 0.4 * model_cost.total)
    assert float(model_cost.kept(density)) == pytest.approx(0.4 * model_cost.total, rel=1e-6)
    assert bool((density <= 1.0).all()) and bool((density >= 1.0 / sizes - 1e-12).all())


def test_aswl_channel_attentions_learn_and_state_round_trips() -> None:
    model, method = train("aswl", steps=24, attention_interval=2)
    values = method.attention.detach()
    assert float(values.max() - values.min()) > 0  # the split moved away from uniform
    state = method.state_dict()
    torch.manual_seed(0)
    other_model = HeldOutNet()
    other = aswl.create_method("aswl", other_model, total_steps=24, structure="channel",
                               example_inputs=example(), target_sparsity=0.5, mask_interval=2,
                               attention_interval=2)
    other.load_state_dict(state)
    assert torch.equal(other.attention.detach(), values)
    for name, mask in method.channel_masks.items():
        assert torch.equal(other.channel_masks[name], mask)


def test_aswl_channel_skips_an_attention_update_on_a_non_finite_saliency(
        caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    model = HeldOutNet()
    method = aswl.create_method("aswl", model, total_steps=12, structure="channel",
                                example_inputs=example(), target_sparsity=0.5, mask_interval=2,
                                attention_interval=2)
    optimizer = torch.optim.SGD(method.weight_parameters(), lr=0.05)
    x, y = torch.randn(8, 3, 8, 8), torch.randint(0, 5, (8,))
    aswl.training_step(model, method, optimizer, x, y)  # observed: the next step learns
    before = method.attention.detach().clone()
    method.estimator.saliency.fill_(float("nan"))  # as a diverging training leaves it
    with caplog.at_level(logging.WARNING):
        aswl.training_step(model, method, optimizer, x, y)
    assert "attention update skipped" in caplog.text
    assert torch.equal(method.attention.detach(), before)  # the split is kept
    assert method.nonfinite_steps == 1 and method.estimator.observed_steps == 0
    assert not bool(method.estimator.saliency.isnan().any())  # a new interval begins


def test_channel_mode_errors_are_clear() -> None:
    with pytest.raises(ConfigError, match="example_inputs"):
        aswl.create_method("aswl", HeldOutNet(), total_steps=4, structure="channel")
    with pytest.raises(ConfigError, match="no channel mode"):
        aswl.create_method("rigl", HeldOutNet(), total_steps=4, structure="channel",
                           example_inputs=example())
    with pytest.raises(ConfigError, match="structure = 'channel'"):
        aswl.create_method("l1_filter", HeldOutNet(), total_steps=4, structure="weight")
    with pytest.raises(ConfigError, match="structure"):
        aswl.create_method("aswl", HeldOutNet(), total_steps=4, structure="blocks")
    with pytest.raises(ConfigError, match="cannot trace"):
        aswl.create_method("aswl", HeldOutNet(), total_steps=4, structure="channel",
                           example_inputs=torch.zeros(1, 7, 8, 8))  # wrong input: named


def test_sparsify_takes_the_channel_structure() -> None:
    torch.manual_seed(0)
    model = HeldOutNet()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    method = aswl.sparsify(model, optimizer, total_steps=6, structure="channel",
                           example_inputs=example(), target_sparsity=0.5, mask_interval=1)
    for _ in range(6):
        loss = model(torch.randn(4, 3, 8, 8)).sum()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    method.finalize()
    assert method.step_count == 6
    assert sum(p.numel() for p in method.export().parameters()) < sum(
        p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", CHANNEL_METHODS)
def test_a_foreign_or_empty_state_is_a_clear_error(name: str) -> None:
    _, method = train(name, steps=2)
    with pytest.raises(MethodStateError, match="lacks"):
        method.load_state_dict({})
    foreign = aswl.create_method("snip", nn.Sequential(nn.Linear(4, 4)), total_steps=2)
    with pytest.raises(MethodStateError, match="state of method 'snip'"):
        method.load_state_dict(foreign.state_dict())
