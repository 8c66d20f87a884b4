"""Python API misuse (issue 10, item 9) gives a clear error or a warning, and tied weights share
one mask and one attention, are counted once and stay tied in the export."""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn
from torch.nn.utils import parametrize

from aswl.methods import (
    ConfigError,
    MethodStateError,
    create_method,
    list_methods,
)
from aswl.methods.registry import structure_of
from aswl.train.step import training_step


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))  # ASWL keeps >= 1 per unit


def train(model: nn.Module, method, steps: int = 6) -> None:
    optimizer = torch.optim.SGD(method.weight_parameters(), lr=0.05, momentum=0.9)
    gen = torch.Generator().manual_seed(3)
    for _ in range(steps):
        x = torch.randn(8, model[0].in_features, generator=gen)
        training_step(model, method, optimizer, x, torch.randint(0, 3, (8,), generator=gen))


@pytest.mark.parametrize("name", [n for n in list_methods() if structure_of(n) == "weight"])
def test_empty_or_foreign_state_is_a_clear_error(name):
    method = create_method(name, mlp(), total_steps=10)
    with pytest.raises(MethodStateError, match="lacks"):
        method.load_state_dict({})
    with pytest.raises(MethodStateError, match="dict"):
        method.load_state_dict([1, 2])
    other = "snip" if name != "snip" else "aswl"
    foreign = create_method(other, mlp(), total_steps=10).state_dict()
    with pytest.raises(MethodStateError, match=f"state of method '{other}'"):
        method.load_state_dict(foreign)
    method.load_state_dict(method.state_dict())  # its own state loads


def test_old_state_without_method_name_still_checked_by_keys():
    method = create_method("aswl", mlp(), total_steps=10)
    state = method.state_dict()
    del state["method"]
    method.load_state_dict(state)
    state.pop("attention_optimizer")
    with pytest.raises(MethodStateError, match="attention_optimizer"):
        method.load_state_dict(state)


def test_total_steps_left_out_warns_and_nonpositive_is_an_error():
    with pytest.warns(UserWarning, match="total_steps not given") as caught:
        create_method("aswl", mlp())
    assert caught[0].filename == __file__  # points at the caller's line
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        create_method("dense", mlp())  # nothing to schedule: no warning
        create_method("gmp", mlp(), total_steps=5)
    for bad in (0, -3, 2.5, True):
        with pytest.raises(ConfigError, match="total_steps"):
            create_method("gmp", mlp(), total_steps=bad)


def test_failed_second_attach_leaves_the_model_untouched():
    model = mlp()
    create_method("gmp", model, total_steps=10, include=["2"])
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(ConfigError, match="already carry"):
        create_method("aswl", model, total_steps=10)  # layer 0 is free, layer 2 is taken
    assert not parametrize.is_parametrized(model[0], "weight")
    after = model.state_dict()
    assert before.keys() == after.keys()
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_failure_while_attaching_rolls_back(monkeypatch):
    from aswl.methods.aswl import ASWL

    def broken(self):
        raise RuntimeError("boom")

    monkeypatch.setattr(ASWL, "init_masks", broken)
    model = mlp()
    with pytest.raises(RuntimeError, match="boom"):
        create_method("aswl", model, total_steps=10)
    assert not any(parametrize.is_parametrized(m, "weight") for m in (model[0], model[2]))
    monkeypatch.undo()
    create_method("aswl", model, total_steps=10)  # the model can still be used


@pytest.mark.parametrize("name", ["aswl", "gmp", "snip", "rigl"])
def test_finalize_or_export_without_any_step_warns(name):
    method = create_method(name, mlp(), total_steps=10)
    with pytest.warns(UserWarning, match="finalize\\(\\) before any step"):
        method.finalize()
    method = create_method(name, mlp(), total_steps=10)
    with pytest.warns(UserWarning, match="export\\(\\) before any step"):
        method.export()
    model = mlp()
    method = create_method(name, model, total_steps=10)
    train(model, method)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        method.finalize()
        exported = method.export()
    assert method.global_sparsity() > 0  # a trained run ends sparse, without a warning
    assert isinstance(exported, nn.Module)


def test_layer_too_small_to_prune_warns():
    with pytest.warns(UserWarning, match="cannot be reached.*at most 0.0% sparse") as record:
        tiny = create_method("gmp", nn.Sequential(nn.Linear(1, 1)), total_steps=10,
                             target_sparsity=0.9)
    assert len(record) == 1 and tiny.global_sparsity() == 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        method = create_method("gmp", mlp(), total_steps=10, target_sparsity=0.9)
    assert method.config.target_sparsity == 0.9


# ---------------------------------------------------------------- tied weights
def tied(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Linear(6, 6), nn.ReLU(), nn.Linear(6, 6), nn.ReLU(),
                          nn.Linear(6, 3))
    model[2].weight = model[0].weight  # one Parameter, two layers (different biases)
    return model


@pytest.mark.parametrize("name", ["aswl", "aswl_paper", "gmp", "dpf", "rigl", "snip"])
def test_tied_weights_share_one_mask_and_stay_tied(name):
    model = tied()
    method = create_method(name, model, total_steps=12, target_sparsity=0.5)
    assert list(method.layers) == ["0", "4"] and method.tied == {"0": ["2"]}
    assert method.total_numel == 36 + 18  # counted once
    assert model[0].parametrizations.weight[0] is model[2].parametrizations.weight[0]
    weights = method.weight_parameters()
    assert len(weights) == len({id(p) for p in weights}) == 5  # 1 shared weight, 3 biases, fc
    train(model, method, steps=12)
    assert torch.equal(model[0].weight, model[2].weight)  # one mask
    attentions = method.attentions()
    assert "2" not in attentions  # one attention (ASWL), reported once
    method.finalize()
    plain = method.export()
    assert plain[0].weight is plain[2].weight  # still tied
    assert not parametrize.is_parametrized(plain[0]) and not parametrize.is_parametrized(plain[2])
    model.eval()
    x = torch.randn(5, 6)
    torch.testing.assert_close(plain(x), model(x), rtol=1e-5, atol=1e-6)
    if name != "aswl_paper":
        nonzero = sum(int(torch.count_nonzero(plain[i].weight)) for i in (0, 4))
        assert 1 - nonzero / 54 == pytest.approx(0.5, abs=1 / 54)


def test_tied_output_scaling_uses_the_shared_attention():
    model = tied()
    create_method("aswl_paper", model, total_steps=4)
    shared = model[0].parametrizations.weight[0].attention
    with torch.no_grad():
        shared.fill_(0.5)
    x = torch.randn(2, 6)
    out = model[2](x)
    with torch.no_grad():
        expected = 0.5 * nn.functional.linear(x, model[2].weight, model[2].bias)
    torch.testing.assert_close(out, expected)
