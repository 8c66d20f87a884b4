"""The fast paths of MaskedWeight: an all-ones mask returns the dense weight, the float mask
is cached between mask changes; values, gradients, parameters and state_dict stay as before."""

import pytest
import torch
from torch import nn

from aswl.sparse import attach_masks, dense_weight, masked_weight, remove_masks


def _layer(straight_through: bool) -> nn.Linear:
    torch.manual_seed(0)
    layer = nn.Linear(6, 4)
    attach_masks({"": layer}, straight_through=straight_through)
    return layer


def _reference(layer: nn.Linear, x: torch.Tensor, straight_through: bool):
    """Output and weight gradient of the plain expression the parametrization stands for."""
    weight = dense_weight(layer).detach().clone().requires_grad_(True)
    mask = masked_weight(layer).mask
    effective = weight * mask if not straight_through else (
        weight * mask).detach() + weight - weight.detach()
    out = nn.functional.linear(x, effective, layer.bias.detach())
    out.square().sum().backward()
    return out.detach(), weight.grad


@pytest.mark.parametrize("straight_through", [True, False])
def test_all_ones_mask_is_exactly_the_dense_layer(straight_through):
    layer = _layer(straight_through)
    plain = nn.Linear(6, 4)
    with torch.no_grad():
        plain.weight.copy_(dense_weight(layer))
        plain.bias.copy_(layer.bias)
    assert layer.weight is dense_weight(layer)  # no copy, no multiply
    x = torch.randn(5, 6)
    out, expected = layer(x), plain(x)
    assert torch.equal(out, expected)
    out.square().sum().backward()
    expected.square().sum().backward()
    assert torch.equal(dense_weight(layer).grad, plain.weight.grad)


@pytest.mark.parametrize("straight_through", [True, False])
def test_sparse_mask_matches_the_plain_expression(straight_through):
    layer = _layer(straight_through)
    mask = torch.rand(4, 6, generator=torch.Generator().manual_seed(1)) > 0.5
    masked_weight(layer).mask.copy_(mask)
    x = torch.randn(5, 6)
    want_out, want_grad = _reference(layer, x, straight_through)
    for _ in range(3):  # the boolean mask at the first read, the cached float mask after
        dense_weight(layer).grad = None
        out = layer(x)
        out.square().sum().backward()
        assert torch.equal(out, want_out)
        assert torch.equal(dense_weight(layer).grad, want_grad)
    # bit for bit the old bool product, negative zeros included
    assert torch.equal(torch.signbit(layer.weight), torch.signbit(dense_weight(layer) * mask))


def test_cache_follows_every_kind_of_mask_change():
    layer = _layer(True)
    param = masked_weight(layer)
    weight = dense_weight(layer)
    assert param.all_ones()
    param.mask[0, 0] = False  # indexing write
    assert not param.all_ones()
    assert layer.weight[0, 0] == 0 and torch.equal(layer.weight[1:], weight[1:])
    param.mask.fill_(True)  # in-place fill
    assert layer.weight is weight
    torch.ge(weight.detach().abs(), 0.3, out=param.mask)  # out= write
    assert torch.equal(layer.weight, weight * (weight.abs() >= 0.3))
    param.mask.view(-1)[:3].zero_()  # a write through a view
    assert torch.equal(layer.weight, weight * param.mask)
    state = {k: v.clone() for k, v in layer.state_dict().items()}
    state["parametrizations.weight.0.mask"].fill_(True)
    layer.load_state_dict(state)  # loading a checkpoint
    assert layer.weight is weight
    param.mask = torch.zeros_like(param.mask)  # a new tensor altogether
    assert torch.equal(layer.weight, torch.zeros_like(weight))


def test_weight_changes_show_through_the_cached_mask():
    layer = _layer(False)
    mask = masked_weight(layer).mask
    mask[1] = False
    first = layer.weight.detach().clone()
    with torch.no_grad():
        dense_weight(layer).add_(1.0)  # an optimiser step
    assert torch.equal(layer.weight, (dense_weight(layer) * mask).detach())
    assert not torch.equal(layer.weight, first)


def test_parameters_and_state_dict_keys_unchanged():
    layer = _layer(True)
    masked_weight(layer).mask[0, :3] = False
    dense = dense_weight(layer)
    assert {id(p) for p in layer.parameters()} == {id(layer.bias), id(dense)}
    assert set(layer.state_dict()) == {"bias", "parametrizations.weight.original",
                                       "parametrizations.weight.0.mask"}
    layer(torch.randn(2, 6)).sum().backward()  # the cached float mask is not a buffer
    assert dense_weight(layer) is dense and dense.grad is not None
    assert set(layer.state_dict()) == {"bias", "parametrizations.weight.original",
                                       "parametrizations.weight.0.mask"}


def test_dtype_change_rebuilds_the_float_mask():
    layer = _layer(False)
    masked_weight(layer).mask[0] = False
    layer.double()
    assert layer.weight.dtype == torch.float64
    assert torch.equal(layer.weight[0], torch.zeros(6, dtype=torch.float64))


def test_remove_masks_after_fast_path_gives_a_copy():
    layer = _layer(True)
    dense = dense_weight(layer)
    remove_masks([layer])
    assert isinstance(layer.weight, nn.Parameter) and layer.weight is not dense
    assert torch.equal(layer.weight, dense)


def test_all_ones_flag_when_the_zero_moves():
    layer = _layer(True)
    param = masked_weight(layer)
    param.mask.view(-1)[5] = False
    assert not param.all_ones() and param.count() == 23
    param.mask.view(-1)[5] = True  # the zero it remembered is gone, another one appears
    param.mask.view(-1)[7] = False
    assert not param.all_ones() and param.count() == 23
    assert layer.weight.view(-1)[7] == 0 and layer.weight.view(-1)[5] != 0
    param.mask.view(-1)[7] = True
    assert param.all_ones() and param.count() == 24 and layer.weight is dense_weight(layer)


def test_assign_with_a_known_count():
    layer = _layer(False)
    param = masked_weight(layer)
    mask = torch.ones(4, 6, dtype=torch.bool)
    mask[2, 3] = False
    param.assign(mask, 23)
    assert param.count() == 23 and not param.all_ones()
    assert torch.equal(layer.weight, (dense_weight(layer) * mask).detach())
    param.assign(torch.ones(4, 6, dtype=torch.bool), 24)
    assert param.all_ones() and layer.weight is dense_weight(layer)
    param.assign(mask)  # no count: found from the mask
    assert param.count() == 23


def test_a_copy_does_not_reuse_a_stale_cache():
    import copy
    import pickle

    layer = _layer(True)
    param = masked_weight(layer)
    assert param.all_ones()  # cached at the mask's current version
    param.mask[1, 2] = False  # changed, not read since: the cache is stale
    twin = copy.deepcopy(layer)
    assert twin.weight[1, 2] == 0  # a copy's version counter restarts
    assert torch.equal(twin.weight, (dense_weight(twin) * masked_weight(twin).mask).detach())
    alone = pickle.loads(pickle.dumps(param))
    assert not alone.all_ones() and alone.count() == 23
