"""Hand-checked behaviour of the baseline methods: magnitude, imp, gmp, dpf, snip, rigl."""

from __future__ import annotations

import copy
import io
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aswl.methods import ConfigError, SparseMethod, create_method
from aswl.methods.rigl import RigL
from aswl.sparse import dense_weight, keep_count
from aswl.sparse.allocation import erk_densities
from aswl.train.step import training_step

FROZEN = ["magnitude", "imp", "gmp", "gmp_global", "snip", "rigl"]


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 16), nn.ReLU(),
                         nn.Linear(16, 4))


def toy(a: Tensor, b: Tensor) -> nn.Module:
    """Two bias-free Linear layers with the given weights."""
    model = nn.Sequential(nn.Linear(a.shape[1], a.shape[0], bias=False),
                          nn.Linear(b.shape[1], b.shape[0], bias=False))
    with torch.no_grad():
        model[0].weight.copy_(a)
        model[1].weight.copy_(b)
    return model


def batch(i: int) -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(100 + i)
    return torch.randn(16, 20, generator=gen), torch.randint(0, 4, (16,), generator=gen)


def optimizer_for(method: SparseMethod) -> torch.optim.Optimizer:
    return torch.optim.SGD(method.weight_parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)


def one_step(model: nn.Module, method: SparseMethod, optimizer: torch.optim.Optimizer,
             i: int, before_method_step: object = None) -> None:
    """One :func:`training_step`; ``before_method_step`` runs after the optimiser step, right
    before ``method.step``."""
    x, y = batch(i)
    if callable(before_method_step):
        method_step = method.step

        def step(opt: torch.optim.Optimizer | None = None) -> None:
            before_method_step()
            method_step(opt)

        method.step = step  # type: ignore[method-assign]
    try:
        training_step(model, method, optimizer, x, y)
    finally:
        method.__dict__.pop("step", None)


def masks_of(method: SparseMethod) -> dict[str, Tensor]:
    return {name: p.mask.clone() for name, p in method.masks.items()}


def counts(method: SparseMethod) -> dict[str, int]:
    return {name: int(p.mask.sum()) for name, p in method.masks.items()}


# --------------------------------------------------------------------------- shared
@pytest.mark.parametrize("name", FROZEN)
def test_pruned_dense_weights_stay_exactly_zero(name: str) -> None:
    """Momentum and weight decay never move a pruned weight off zero; masks are binding."""
    model = mlp()
    method = create_method(name, model, total_steps=24, target_sparsity=0.7, update_interval=4) \
        if name == "rigl" else create_method(name, model, total_steps=24, target_sparsity=0.7)
    optimizer = optimizer_for(method)
    for i in range(24):
        one_step(model, method, optimizer, i)
        for layer, module in method.layers.items():
            assert torch.all(dense_weight(module)[~method.masks[layer].mask] == 0), (i, layer)
    method.finalize()
    for layer, module in method.layers.items():
        assert torch.all(dense_weight(module)[~method.masks[layer].mask] == 0)


@pytest.mark.parametrize(("name", "options", "field"), [
    ("magnitude", {"scope": "all"}, "scope"),
    ("magnitude", {"prune_at": 1.5}, "prune_at"),
    ("imp", {"rounds": 0}, "rounds"),
    ("gmp", {"scope": "uniform"}, "scope"),
    ("snip", {"snip_batches": 0}, "snip_batches"),
    ("rigl", {"drop_fraction": 1.0}, "drop_fraction"),
    ("rigl", {"distribution": "er"}, "distribution"),
    ("rigl", {"update_interval": 0}, "update_interval"),
    ("rigl", {"end": 2.0}, "end"),
    ("dpf", {"bogus": 1}, "bogus"),
])
def test_bad_options_name_the_field(name: str, options: dict, field: str) -> None:
    with pytest.raises(ConfigError, match=field):
        create_method(name, mlp(), total_steps=10, **options)


# --------------------------------------------------------------------------- magnitude
def test_magnitude_dense_until_prune_at_then_frozen() -> None:
    model = mlp()
    method = create_method("magnitude", model, total_steps=20, target_sparsity=0.75,
                           prune_at=0.5)
    optimizer = optimizer_for(method)
    snapshot: dict[str, Tensor] = {}

    def grab() -> None:
        snapshot.update({n: dense_weight(m).detach().abs().clone()
                         for n, m in method.layers.items()})

    for i in range(10):
        assert method.global_sparsity() == 0.0
        one_step(model, method, optimizer, i, grab)
    # pruned once, at step 10, per layer, by the magnitudes right before
    pruned = masks_of(method)
    for name, mask in pruned.items():
        assert int(mask.sum()) == keep_count(method.numels[name], 0.25)
        assert snapshot[name][mask].min() >= snapshot[name][~mask].max()
    for i in range(10, 20):
        one_step(model, method, optimizer, i)
        for name, mask in pruned.items():
            assert torch.equal(method.masks[name].mask, mask)
    method.finalize()
    for name, mask in pruned.items():
        assert torch.equal(method.masks[name].mask, mask)


def test_magnitude_finalize_before_prune_at_prunes() -> None:
    method = create_method("magnitude", mlp(), total_steps=100, target_sparsity=0.5)
    method.finalize()
    assert counts(method) == {n: keep_count(k, 0.5) for n, k in method.numels.items()}


# --------------------------------------------------------------------------- imp
def test_imp_rounds_geometric_and_frozen_between() -> None:
    model = mlp()
    method = create_method("imp", model, total_steps=40, target_sparsity=0.8, rounds=3)
    assert method.prune_steps() == [10, 20, 30]
    optimizer = optimizer_for(method)
    previous = masks_of(method)
    for i in range(40):
        one_step(model, method, optimizer, i)
        done = sum(1 for at in (10, 20, 30) if method.step_count >= at)
        density = 0.2 ** (done / 3)
        assert counts(method) == {n: keep_count(k, density) for n, k in method.numels.items()}
        now = masks_of(method)
        for name, mask in now.items():
            assert not torch.any(mask & ~previous[name])  # masks only shrink
            if method.step_count not in (10, 20, 30):
                assert torch.equal(mask, previous[name])
        previous = now


# --------------------------------------------------------------------------- gmp
def test_gmp_layer_vs_global_thresholds() -> None:
    a = torch.arange(1, 9, dtype=torch.float32).reshape(2, 4) / 10  # 0.1 .. 0.8
    b = torch.tensor([[1.0, -2.0], [3.0, -4.0]])
    layer = create_method("gmp", toy(a, b), target_sparsity=0.5, schedule="constant")
    assert torch.equal(layer.masks["0"].mask, a >= 0.5)  # 4 of 8 in each layer
    assert torch.equal(layer.masks["1"].mask, b.abs() >= 3)  # 2 of 4
    glob = create_method("gmp", toy(a, b), target_sparsity=0.5, schedule="constant",
                         scope="global")
    # one threshold: the 6 largest of all 12 are b's four and a's 0.7, 0.8
    assert torch.equal(glob.masks["0"].mask, a >= 0.7)
    assert bool(glob.masks["1"].mask.all())
    assert create_method("gmp_global", toy(a, b)).config.scope == "global"
    # global keeps each layer's best weight even when one threshold would empty a layer
    tight = create_method("gmp_global", toy(a, b), target_sparsity=0.95, schedule="constant")
    assert counts(tight) == {"0": 1, "1": 1}
    assert bool(tight.masks["0"].mask[1, 3]) and bool(tight.masks["1"].mask[1, 1])


@pytest.mark.parametrize("scope", ["layer", "global"])
def test_gmp_follows_cubic_schedule_and_masks_shrink(scope: str) -> None:
    model = mlp()
    method = create_method("gmp", model, total_steps=20, target_sparsity=0.9, scope=scope)
    optimizer = optimizer_for(method)
    previous = masks_of(method)
    for i in range(20):
        one_step(model, method, optimizer, i)
        sparsity = method.schedule(method.step_count)
        if scope == "layer":
            assert counts(method) == {n: keep_count(k, 1 - sparsity)
                                      for n, k in method.numels.items()}
        else:
            assert sum(counts(method).values()) == keep_count(method.total_numel, 1 - sparsity)
        for name, mask in masks_of(method).items():
            assert not torch.any(mask & ~previous[name])
        previous = masks_of(method)
    assert method.global_sparsity() == pytest.approx(0.9, abs=3 / method.total_numel)


# --------------------------------------------------------------------------- dpf
def test_dpf_straight_through_and_mask_interval() -> None:
    model = mlp()
    method = create_method("dpf", model, total_steps=64, target_sparsity=0.8)
    assert method.config.mask_interval == 16
    optimizer = optimizer_for(method)
    for i in range(16):
        one_step(model, method, optimizer, i)
    masks = masks_of(method)
    pruned_values = {n: dense_weight(m).detach()[~masks[n]].clone()
                     for n, m in method.layers.items()}
    assert method.global_sparsity() > 0
    sparsity = method.schedule(16)
    assert counts(method) == {n: keep_count(k, 1 - sparsity) for n, k in method.numels.items()}
    for i in range(16, 31):
        one_step(model, method, optimizer, i)
        for name, mask in masks.items():  # unchanged between reparametrisations
            assert torch.equal(method.masks[name].mask, mask)
    # pruned dense weights got the gradient of the sparse model and moved
    for name, module in method.layers.items():
        assert not torch.equal(dense_weight(module).detach()[~masks[name]], pruned_values[name])
        assert dense_weight(module).grad[~masks[name]].abs().sum() > 0
    one_step(model, method, optimizer, 31)  # step 32: masks recomputed from dense magnitudes
    for name, module in method.layers.items():
        magnitude = dense_weight(module).detach().abs()
        mask = method.masks[name].mask
        assert magnitude[mask].min() >= magnitude[~mask].max()


# --------------------------------------------------------------------------- snip
def test_snip_scores_connection_sensitivity_then_fixes_mask() -> None:
    model = mlp()
    reference = copy.deepcopy(model)  # plain copy at initialisation
    method = create_method("snip", model, total_steps=12, target_sparsity=0.9, snip_batches=2)
    optimizer = optimizer_for(method)
    initial = {n: p.detach().clone() for n, p in model.named_parameters()}

    # expected: |sum over the two batches of w * dL/dw| at initialisation, global top-k
    sensitivity = {}
    for i in range(2):
        reference.zero_grad()
        x, y = batch(i)
        F.cross_entropy(reference(x), y).backward()
        for name in method.layers:
            module = reference.get_submodule(name)
            term = module.weight.detach() * module.weight.grad
            sensitivity[name] = sensitivity.get(name, 0) + term
    flat = torch.cat([s.abs().reshape(-1) for s in sensitivity.values()])
    keep = keep_count(method.total_numel, 0.1)
    threshold = flat.topk(keep).values.min()

    for i in range(2):
        assert method.global_sparsity() == 0.0
        one_step(model, method, optimizer, i)
        if i == 0:  # scoring step: nothing moved, not even through weight decay
            for name, param in model.named_parameters():
                assert torch.equal(param.detach(), initial[name]), name
    assert method.fixed
    fixed = masks_of(method)
    assert sum(counts(method).values()) == keep
    for name, mask in fixed.items():
        assert torch.equal(mask, sensitivity[name].abs() >= threshold)
    for i in range(2, 12):
        one_step(model, method, optimizer, i)
        for name, mask in fixed.items():
            assert torch.equal(method.masks[name].mask, mask)
    assert any(not torch.equal(p.detach(), initial[n]) for n, p in model.named_parameters())


def test_snip_resume_during_scoring_is_exact() -> None:
    """The partial sensitivity travels in the method state (weights_only checkpoint)."""
    def run(resume_after: int | None) -> dict[str, Tensor]:
        model = mlp()
        method = create_method("snip", model, total_steps=8, target_sparsity=0.9,
                               snip_batches=3)
        optimizer = optimizer_for(method)
        for i in range(8):
            if i == resume_after:
                buffer = io.BytesIO()
                torch.save({"model": model.state_dict(), "method": method.state_dict()}, buffer)
                buffer.seek(0)
                state = torch.load(buffer, weights_only=True)
                model = mlp(seed=3)
                method = create_method("snip", model, total_steps=8, target_sparsity=0.9,
                                       snip_batches=3)
                model.load_state_dict(state["model"])
                method.load_state_dict(state["method"])
                optimizer = optimizer_for(method)  # no optimiser state yet: nothing moved
            one_step(model, method, optimizer, i)
        return masks_of(method)

    straight, resumed = run(None), run(2)
    assert all(torch.equal(straight[n], resumed[n]) for n in straight)


# --------------------------------------------------------------------------- rigl
def test_erk_densities_formula() -> None:
    shapes = {"a": (10, 20), "b": (4, 10)}
    # raw: a (10+20)/200 = 0.15, b (4+10)/40 = 0.35; eps = 0.5 * 240 / (30 + 14)
    eps = 120 / 44
    got = erk_densities(shapes, 0.5)
    assert got["a"] == pytest.approx(eps * 0.15)
    assert got["b"] == pytest.approx(eps * 0.35)
    assert got["a"] * 200 + got["b"] * 40 == pytest.approx(120)
    # at 0.8, b would exceed 1: dense, and a takes the rest of the budget: (192 - 40) / 200
    assert erk_densities(shapes, 0.8) == pytest.approx({"a": 0.76, "b": 1.0})
    conv = erk_densities({"c": (8, 3, 3, 3), "l": (10, 72)}, 0.3)
    ratio = (17 / 216) / (82 / 720)
    assert conv["c"] / conv["l"] == pytest.approx(ratio)


def test_rigl_erk_counts_and_deterministic_random_masks() -> None:
    models = [mlp(), mlp(), mlp()]  # mlp() seeds the RNG itself: build them first
    torch.manual_seed(5)
    first = create_method("rigl", models[0], total_steps=10, target_sparsity=0.8)
    torch.manual_seed(5)
    second = create_method("rigl", models[1], total_steps=10, target_sparsity=0.8)
    torch.manual_seed(6)
    third = create_method("rigl", models[2], total_steps=10, target_sparsity=0.8)
    assert isinstance(first, RigL)
    densities = first.layer_densities()
    assert counts(first) == {n: keep_count(k, densities[n]) for n, k in first.numels.items()}
    assert all(torch.equal(first.masks[n].mask, second.masks[n].mask) for n in first.masks)
    assert any(not torch.equal(first.masks[n].mask, third.masks[n].mask) for n in first.masks)
    kept = sum(counts(first).values())
    assert abs(kept - 0.2 * first.total_numel) <= len(first.layers)
    # smaller layers are denser under ERK
    assert densities["4"] > densities["2"] > densities["0"]
    uniform = create_method("rigl", mlp(), target_sparsity=0.8, distribution="uniform")
    assert counts(uniform) == {n: keep_count(k, 0.2) for n, k in uniform.numels.items()}


def test_rigl_cosine_drop_fraction() -> None:
    method = create_method("rigl", mlp(), total_steps=100, end=0.8, drop_fraction=0.3,
                           update_interval=10)
    assert method.drop_fraction_at(0) == pytest.approx(0.3)
    assert method.drop_fraction_at(40) == pytest.approx(0.15)
    assert method.drop_fraction_at(80) == pytest.approx(0.0, abs=1e-12)
    assert [t for t in range(101) if method.schedule.update_due(t)] == [10, 20, 30, 40, 50, 60,
                                                                        70]
    assert create_method("rigl", mlp(), total_steps=100).end_step == 75  # ramp_end default
    assert create_method("rigl", mlp(), total_steps=100, ramp_end=0.5).end_step == 50


def rigl_before_update() -> tuple[nn.Module, SparseMethod, torch.optim.Optimizer]:
    """RigL after 4 steps; its mask update is due at step 5."""
    model = mlp()
    method = create_method("rigl", model, total_steps=20, target_sparsity=0.8,
                           update_interval=5, drop_fraction=0.3, end=1.0)
    optimizer = optimizer_for(method)
    for i in range(4):
        one_step(model, method, optimizer, i)
    return model, method, optimizer


def test_rigl_update_drops_smallest_grows_largest_gradient_at_zero() -> None:
    model, method, optimizer = rigl_before_update()
    before = masks_of(method)
    seen: dict[str, Tensor] = {}

    def grab() -> None:  # after the optimiser step, right before the mask update
        seen.update({n: dense_weight(m).detach().abs().clone() for n, m in method.layers.items()})

    one_step(model, method, optimizer, 4, grab)
    assert method.step_count == 5
    fraction = method.drop_fraction_at(5)
    assert fraction == pytest.approx(0.15 * (1 + math.cos(math.pi * 5 / 20)))
    changed = False
    for name, module in method.layers.items():
        old, new = before[name], method.masks[name].mask
        assert int(new.sum()) == int(old.sum())  # count constant
        active = int(old.sum())
        drop = int(fraction * active)
        dropped = old & ~new
        grown = new & ~old
        assert int(dropped.sum()) <= drop  # a dropped weight may be regrown at once
        # the active - drop largest magnitudes all survive
        survivors = torch.zeros_like(old).view(-1)
        survivors[torch.where(old, seen[name], -1.0).view(-1).topk(active - drop).indices] = True
        assert torch.all(new[survivors.view_as(old)])
        changed = changed or bool(dropped.any())
        assert torch.all(dense_weight(module)[grown] == 0)  # new connections start at zero
        assert torch.all(dense_weight(module)[~new] == 0)
    assert changed
    # no update between intervals
    after = masks_of(method)
    for i in range(5, 9):
        one_step(model, method, optimizer, i)
    assert all(torch.equal(after[n], method.masks[n].mask) for n in after)


def test_rigl_grows_by_dense_gradient() -> None:
    """Grown weights are the inactive ones with the largest dense-gradient magnitude."""
    model = mlp()
    method = create_method("rigl", model, total_steps=10, target_sparsity=0.8,
                           update_interval=2, drop_fraction=0.5, end=1.0)
    optimizer = torch.optim.SGD(method.weight_parameters(), lr=0.0)  # weights stay put
    one_step(model, method, optimizer, 0)
    before = masks_of(method)
    # the dense gradient at the sparse weights, as after_backward will see it on step 2
    x, y = batch(1)
    probe = copy.deepcopy(model)  # straight-through: the gradient reaches every dense weight
    F.cross_entropy(probe(x), y).backward()
    grads = {n: dense_weight(probe.get_submodule(n)).grad.abs() for n in method.layers}
    one_step(model, method, optimizer, 1)
    assert method.step_count == 2
    grew = 0
    for name in method.layers:
        old, new = before[name], method.masks[name].mask
        assert int(new.sum()) == int(old.sum())
        grown = new & ~old
        grew += int(grown.sum())
        if grown.any():  # every weight left out had no larger gradient than any grown one
            assert grads[name][grown].min() >= grads[name][~new].max()
    assert grew > 0


def test_one_rule_for_when_the_schedule_is_done() -> None:
    """schedule.done(step): from there on the sparsity no longer changes (best-val selection)."""
    steps = 100
    cases = {("magnitude", (("prune_at", 0.9),)): 90, ("snip", (("snip_batches", 3),)): 3,
             ("imp", (("rounds", 2), ("ramp_end", 0.5))): 50, ("gmp", ()): 75,
             ("rigl", (("end", 0.6),)): 60, ("aswl", ()): 75, ("dense", ()): 0}
    for (name, options), first in cases.items():
        method = create_method(name, mlp(), total_steps=steps, **dict(options))
        done = [t for t in range(steps + 1) if method.schedule.done(t)]
        assert done[0] == first and done == list(range(first, steps + 1)), name


def test_lamp_scores_and_global_threshold() -> None:
    from aswl.methods.lamp import lamp_scores

    weight = torch.tensor([[3.0, -1.0], [2.0, 0.5]])
    # ascending w^2: 0.25, 1, 4, 9 -> 0.25/14.25, 1/14, 4/13, 9/9
    expected = torch.tensor([[1.0, 1 / 14], [4 / 13, 0.25 / 14.25]])
    torch.testing.assert_close(lamp_scores(weight), expected)
    # layer a has large weights but LAMP (unlike global magnitude) spares layer b's best ones
    a = torch.tensor([[10.0, 9.0, 8.0, 7.0]])
    b = torch.tensor([[1.0], [0.9], [0.1], [0.05]])
    method = create_method("lamp", toy(a, b), total_steps=1, target_sparsity=0.5,
                           schedule="constant")
    assert counts(method) == {"0": 2, "1": 2}
    glob = create_method("gmp_global", toy(a, b), total_steps=1, target_sparsity=0.5,
                         schedule="constant")
    assert counts(glob) == {"0": 3, "1": 1}


def test_rigl_resets_the_momentum_of_grown_weights() -> None:
    model, method, optimizer = rigl_before_update()
    before = masks_of(method)
    for module in method.layers.values():  # pretend old momentum sits on every weight
        optimizer.state[dense_weight(module)]["momentum_buffer"].fill_(1.0)
    one_step(model, method, optimizer, 4)
    grown_any = False
    for name, module in method.layers.items():
        grown = method.masks[name].mask & ~before[name]
        buffer = optimizer.state[dense_weight(module)]["momentum_buffer"]
        assert torch.all(buffer[grown] == 0)
        assert torch.all(buffer[before[name] & method.masks[name].mask] != 0)
        grown_any = grown_any or bool(grown.any())
    assert grown_any
