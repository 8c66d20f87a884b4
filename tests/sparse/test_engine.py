"""Invariants of the mask engine on tiny hand-computed tensors."""

import torch
from torch import nn
from torch.nn.utils import parametrize

from aswl.sparse import (
    attach_masks,
    dense_weight,
    find_prunable,
    keep_count,
    masked_weight,
    remove_masks,
    topk_mask,
)
from aswl.sparse.schedules import gradual


def test_topk_mask_keeps_exactly_k_largest():
    scores = torch.tensor([[0.1, 0.9, 0.3], [0.5, 0.2, 0.8]])
    mask = topk_mask(scores, 3)
    assert mask.tolist() == [[False, True, False], [True, False, True]]


def test_topk_mask_ties_still_exact_count():
    scores = torch.tensor([1.0, 1.0, 1.0, 0.5])
    assert int(topk_mask(scores, 2).sum()) == 2
    assert int(topk_mask(scores, 0).sum()) == 0
    assert bool(topk_mask(scores, 4).all())


def test_keep_count_rounds_and_keeps_one():
    assert keep_count(1000, 0.0123) == 12
    assert keep_count(10, 0.0) == 1
    assert keep_count(10, 1.0) == 10


def _layer():
    layer = nn.Linear(3, 2)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[1.0, -2.0, 0.5], [-0.1, 3.0, 0.2]]))
    return layer


def test_straight_through_gradient_reaches_pruned_dense_weights():
    layer = _layer()
    attach_masks({"": layer}, straight_through=True)
    masked_weight(layer).mask.copy_(torch.tensor([[True, True, False], [False, True, False]]))
    x = torch.ones(1, 3)
    layer(x).sum().backward()
    grad = dense_weight(layer).grad
    assert torch.equal(grad, torch.ones(2, 3))  # every weight, pruned or not, gets dL/dw_hat


def test_plain_mask_gradient_is_masked():
    layer = _layer()
    attach_masks({"": layer}, straight_through=False)
    mask = torch.tensor([[True, True, False], [False, True, False]])
    masked_weight(layer).mask.copy_(mask)
    layer(torch.ones(1, 3)).sum().backward()
    assert torch.equal(dense_weight(layer).grad, mask.float())


def test_forward_uses_sparse_weights_and_dense_param_identity_kept():
    layer = _layer()
    original = layer.weight
    attach_masks({"": layer})
    assert dense_weight(layer) is original
    masked_weight(layer).mask.copy_(torch.tensor([[True, False, False], [False, False, True]]))
    assert torch.equal(layer.weight, torch.tensor([[1.0, 0, 0], [0, 0, 0.2]]))
    assert torch.equal(dense_weight(layer).detach()[0, 1], torch.tensor(-2.0))  # dense kept


def test_find_prunable_by_name_with_patterns():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8, 2))
    assert list(find_prunable(model)) == ["0", "3"]
    assert list(find_prunable(model, exclude=["3"])) == ["0"]
    assert list(find_prunable(model, include=["3"])) == ["3"]


def test_remove_masks_on_copy_leaves_original_working():
    import copy

    model = nn.Sequential(_layer())
    attach_masks({"0": model[0]})
    masked_weight(model[0]).mask[0, 0] = False
    plain = copy.deepcopy(model)
    remove_masks([plain[0]])
    assert not parametrize.is_parametrized(plain[0])
    assert plain[0].weight[0, 0] == 0
    assert parametrize.is_parametrized(model[0])
    x = torch.randn(4, 3)
    assert torch.allclose(plain(x), model(x))


def test_cubic_schedule_endpoints_and_monotone():
    schedule = gradual(0.9, begin_step=10, end_step=110)
    values = [schedule(s) for s in range(0, 130, 5)]
    assert values[0] == 0.0 and schedule(110) == 0.9 and schedule(500) == 0.9
    assert all(a <= b for a, b in zip(values, values[1:]))
    assert abs(schedule(60) - 0.9 * (1 - 0.5**3)) < 1e-12
