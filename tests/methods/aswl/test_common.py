"""ASWL's equations and our additions: ratios, clipping, regulariser gradient, target mode."""

import pytest
import torch
from torch import nn

from aswl.methods import ConfigError, create_method, project_to_budget
from aswl.methods.aswl.allocation import pruning_ratios
from aswl.train.step import training_step


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
                         nn.Linear(32, 4))


def train(method, model, steps, lr=0.05):
    optimizer = torch.optim.SGD(method.weight_parameters(), lr=lr, momentum=0.9)
    generator = torch.Generator().manual_seed(1)
    x = torch.randn(64, 20, generator=generator)
    y = torch.randint(0, 4, (64,), generator=generator)
    for _ in range(steps):
        training_step(model, method, optimizer, x, y)
    return x


def test_pruning_ratio_equation_and_cap():
    cap = create_method("aswl_paper", mlp(), total_steps=10).config.ratio_cap
    assert cap == 0.99  # the authors' cap
    a = torch.tensor([0.01, 0.5, 1.0])
    p = pruning_ratios(a, 2.0, cap)
    assert torch.allclose(p, torch.tensor([0.99**2, 0.25, 0.0]), atol=1e-6)
    assert float(pruning_ratios(torch.tensor([0.01]), 0.5, cap)) == pytest.approx(0.99)  # capped
    assert float(pruning_ratios(torch.tensor([1.0]), 0.1, cap)) == 0.0  # a = 1 prunes nothing
    assert create_method("aswl", mlp(), total_steps=10).config.ratio_cap == 1.0  # no cap


def test_attention_clipped_to_range():
    model = mlp()
    method = create_method("aswl_paper", model, attention_lr=10.0, gamma=100.0)
    train(method, model, 3)
    values = method.attentions().values()
    assert all(0.01 - 1e-7 <= v <= 1.0 for v in values)
    assert min(values) == pytest.approx(0.01)


def test_every_layer_keeps_one_percent_at_collapse():
    model = mlp()
    method = create_method("aswl_paper", model, attention_lr=10.0, gamma=100.0)
    train(method, model, 3)
    for row in method.layer_report():
        assert row["nonzero"] >= max(1, round(0.01 * row["numel"]))


def test_regularizer_attention_gradient_matches_finite_difference():
    model = mlp()
    method = create_method("aswl_paper", model, gamma=0.7, density_target=0.2, weight_decay=0.0,
                           alpha=1.5)
    attention = method.masks["0"].attention
    with torch.no_grad():
        attention.fill_(0.3)
    reg = method.regularizer()
    (grad,) = torch.autograd.grad(reg, attention)
    eps = 1e-3
    with torch.no_grad():
        attention.add_(eps)
        plus = float(method.regularizer())
        attention.sub_(2 * eps)
        minus = float(method.regularizer())
    assert float(grad) == pytest.approx((plus - minus) / (2 * eps), rel=1e-3)


def test_output_scaling_equation_one():
    model = mlp()
    method = create_method("aswl_paper", model)
    x = torch.randn(3, 20)
    with torch.no_grad():
        method.masks["4"].attention.fill_(0.25)
    scaled = model(x)
    with torch.no_grad():
        method.masks["4"].attention.fill_(1.0)
    assert torch.allclose(scaled, 0.25 * model(x), atol=1e-6)


@pytest.mark.parametrize("name", ["aswl", "aswl_paper"])
def test_fold_is_exact(name):
    model = mlp()
    method = create_method(name, model, total_steps=20, scale_output=True,
                           target_sparsity=0.7)
    x = train(method, model, 20)
    with torch.no_grad():
        for i, key in enumerate(method.layers):
            method.masks[key].attention.fill_(0.3 + 0.2 * i)
    method.finalize()
    model.eval()
    plain = method.export()
    assert torch.allclose(plain(x), model(x), atol=1e-5)
    assert not any(m._forward_hooks for m in plain.modules())


def test_target_mode_exact_sparsity_and_learned_split():
    model = mlp()
    method = create_method("aswl", model, total_steps=60, target_sparsity=0.9)
    train(method, model, 60)
    method.finalize()
    rows = method.layer_report()
    total = sum(r["numel"] for r in rows)
    nonzero = sum(r["nonzero"] for r in rows)
    assert abs(nonzero - 0.1 * total) <= len(rows) * 0.5 + 1e-9
    assert len({round(r["sparsity"], 3) for r in rows}) > 1  # not a uniform split
    assert len(set(method.attentions().values())) > 1


def test_project_to_budget_meets_budget_and_bounds():
    numel = torch.tensor([1000.0, 100.0, 10.0])
    raw = torch.tensor([0.2, 0.9, 0.5], requires_grad=True)
    out = project_to_budget(raw, numel, 0.1, 0.01)
    assert float((out * numel).sum().detach()) == pytest.approx(0.1 * 1110, rel=1e-5)
    assert bool((out <= 1).all()) and bool((out >= 0.01).all())
    # the gradient moves the split only: scaling every raw density changes nothing
    (out * numel).sum().backward()
    assert torch.allclose(raw.grad, torch.zeros(3), atol=1e-4)


def test_soft_floor_same_values_and_a_gradient_for_the_layer_at_its_floor():
    numel = torch.tensor([1000.0, 1000.0, 1000.0])
    raw = torch.tensor([0.001, 0.5, 0.5], requires_grad=True)  # the first is held at 0.05
    hard = project_to_budget(raw, numel, 0.3, 0.05)
    soft = project_to_budget(raw, numel, 0.3, 0.05, soft_floor=True)
    assert torch.equal(hard, soft) and float(hard[0]) == pytest.approx(0.05)
    marginal = torch.tensor([-1.0, 0.0, 0.0])  # keeping more of the first layer would help
    (grad_hard,) = torch.autograd.grad((hard * marginal).sum(), raw)
    (grad_soft,) = torch.autograd.grad((soft * marginal).sum(), raw, retain_graph=True)
    assert float(grad_hard[0]) == 0.0 and float(grad_soft[0]) < 0.0
    # the soft gradient still moves the split only
    (total,) = torch.autograd.grad((soft * numel).sum(), raw)
    assert torch.allclose(total, torch.zeros(3), atol=1e-4)


@pytest.mark.parametrize("prior", ["uniform", "lamp"])
def test_attentions_stay_at_the_edge_of_their_floor(prior):
    method = create_method("aswl", mlp(), total_steps=10, target_sparsity=0.95, min_kept=32,
                           prior=prior)
    method.step_count = 10  # the end of the ramp: the budget is the target
    method.update_masks()  # exact there, so the prior is refreshed
    if prior == "lamp":
        assert len(set(method.prior.tolist())) == 3  # LAMP's uneven densities at the target
    else:
        assert method.prior.tolist() == [1.0, 1.0, 1.0]
    with torch.no_grad():
        for name, value in zip(method.layers, (0.01, 0.6, 0.9)):
            method.masks[name].attention.fill_(value)
    before = method.density_vector().detach()
    assert float(before[0]) == pytest.approx(method.floor[0])  # held at its floor
    for param in method.parameters():  # an attention step that moves nothing (Adam, zero)
        param.grad = torch.zeros_like(param)
    method.step()  # ... after which the soft floor lifts the first attention
    after = method.density_vector().detach()
    assert torch.allclose(before, after, atol=1e-6)  # the split is the same
    raw = method.raw_density(method.attention_vector().detach())  # with the prior's factor
    scale = float(after[1] / raw[1])  # a free layer's density is the shared scale times raw
    assert float(raw[0]) * scale == pytest.approx(method.floor[0], rel=1e-4)  # at the edge
    assert method.attentions()["0"] > 0.01
    assert method.attentions()["2"] == pytest.approx(0.6)  # free layers are not lifted


@pytest.mark.parametrize("options, field", [
    ({"alpha": 0}, "alpha"), ({"gamma": -1}, "gamma"), ({"target_sparsity": 1.0},
                                                          "target_sparsity"),
    ({"variant": "nope"}, "variant"), ({"bogus": 1}, "bogus"),
])
def test_bad_options_name_the_field(options, field):
    with pytest.raises(ConfigError, match=field):
        create_method("aswl", mlp(), **options)


def test_paper_variant_without_output_scaling_still_learns_from_phi():
    model = mlp()
    method = create_method("aswl_paper", model, scale_output=False, gamma=1.0)
    assert method.regularizer().requires_grad
    before = method.attentions()
    train(method, model, 3)
    assert method.attentions() != before


@pytest.mark.parametrize("removed", [
    {"estimator": "paper"}, {"variant": "paper"}, {"saliency": "restore"}, {"accumulate": False},
    {"attention_space": "log"}, {"soft_floor": False}, {"gamma": 0.1}])
def test_removed_and_other_variant_options_name_the_method(removed):
    """The target variant learns from the estimator only; removed options are errors."""
    with pytest.raises(ConfigError, match=f"method 'aswl' does not use.*{next(iter(removed))}"):
        create_method("aswl", mlp(), total_steps=10, **removed)


@pytest.mark.parametrize("options, field", [
    ({"prior": "erk"}, "prior"), ({"attention_optimizer": "adam_shared"}, "attention_optimizer")])
def test_removed_choices_are_errors(options, field):
    with pytest.raises(ConfigError, match=field):
        create_method("aswl", mlp(), total_steps=10, **options)


def test_method_options_are_type_checked():
    with pytest.raises(ConfigError, match="exclude"):
        create_method("aswl", mlp(), exclude="4")
