"""The target variant: no cap, minimum counts, frozen masks after the ramp, sampled masks,
the accumulated estimator and the LAMP prior (through the public API)."""


import pytest
import torch
from torch import nn

from aswl.methods import ConfigError, create_method
from aswl.methods.lamp import lamp_densities, lamp_scores
from aswl.sparse import dense_weight
from aswl.train.step import training_step


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(200, 100), nn.ReLU(), nn.Linear(100, 40), nn.ReLU(),
                         nn.Linear(40, 10))


def batch():
    generator = torch.Generator().manual_seed(1)
    return torch.randn(64, 200, generator=generator), torch.randint(0, 10, (64,),
                                                                    generator=generator)


def train(method, model, steps):
    optimizer = torch.optim.SGD(method.weight_parameters(), lr=0.05, momentum=0.9)
    x, y = batch()
    for _ in range(steps):
        training_step(model, method, optimizer, x, y)


def test_no_cap_reaches_the_exact_target_with_minimum_counts():
    model = mlp()
    numel = 200 * 100 + 100 * 40 + 40 * 10
    method = create_method("aswl", model, total_steps=40, target_sparsity=0.998,
                           min_kept=4)
    train(method, model, 40)
    method.finalize()
    rows = method.layer_report()
    kept = sum(r["nonzero"] for r in rows)
    assert abs(kept - 0.002 * numel) <= len(rows) * 0.5 + 1e-9
    assert all(r["nonzero"] >= 4 for r in rows)
    assert max(r["sparsity"] for r in rows) > 0.99  # beyond the paper's 0.99 cap


def test_default_minimum_is_one_weight_per_output_unit():
    model = mlp()
    method = create_method("aswl", model, total_steps=20, target_sparsity=0.97)
    assert method.min_counts == {"0": 100, "2": 40, "4": 10}
    train(method, model, 20)
    method.finalize()
    for row in method.layer_report():
        assert row["nonzero"] >= method.min_counts[row["name"]]


def test_target_beyond_the_minimum_counts_is_refused():
    with pytest.raises(ConfigError, match="min_kept"):
        create_method("aswl", mlp(), total_steps=10, target_sparsity=0.999)


def test_paper_variant_keeps_its_cap():
    method = create_method("aswl_paper", mlp(), total_steps=10)
    with torch.no_grad():
        for param in method.parameters():
            param.fill_(0.0)  # below the clip: p = (1 - 0)^1, capped
    assert method.density_vector().tolist() == pytest.approx([0.01] * 3)


def test_masks_freeze_at_the_end_of_the_ramp_and_finalize_changes_nothing():
    model = mlp()
    method = create_method("aswl", model, total_steps=40, target_sparsity=0.9, ramp_end=0.5)
    train(method, model, 19)
    assert not method.frozen
    train(method, model, 1)
    assert method.frozen
    masks = {name: param.mask.clone() for name, param in method.masks.items()}
    attentions = method.attentions()
    train(method, model, 20)
    assert method.attentions() == attentions
    method.finalize()
    for name, param in method.masks.items():
        assert torch.equal(param.mask, masks[name])
    kept = sum(int(m.sum()) for m in masks.values())
    assert abs(kept - 0.1 * method.total_numel) <= 3 * 0.5 + 1e-9  # exact at the freeze


def test_without_freezing_finalize_recomputes_masks():
    model = mlp()
    method = create_method("aswl", model, total_steps=40, target_sparsity=0.9, ramp_end=0.5,
                           freeze_after_ramp=False)
    train(method, model, 40)
    assert not method.frozen


def test_sampled_masks_approximate_the_count_on_large_layers(monkeypatch):
    import aswl.methods.aswl.common as module

    monkeypatch.setattr(module, "MASK_SAMPLE", 5000)  # the 20,000-weight layer is sampled
    model = mlp()
    method = create_method("aswl", model, total_steps=100, target_sparsity=0.9)
    index = method.layer_masks.index
    assert index["0"] is not None and index["2"] is None
    method.step_count = 50  # mid-ramp
    assert method.approximate_masks()
    method.update_masks()
    kept = int(method.masks["0"].mask.sum())
    assert kept == pytest.approx(method.kept["0"], rel=0.15)
    method.step_count = 75  # the end of the ramp: exact
    assert not method.approximate_masks()
    method.update_masks()
    assert int(method.masks["0"].mask.sum()) == method.kept["0"]
    assert int(method.masks["2"].mask.sum()) == method.kept["2"]  # small layers: always exact


def test_estimator_accumulates_between_attention_updates():
    """The statistic adds up every mask-update step between two attention updates: an
    observer sees about five steps' worth of band weights with masks every step, one with
    masks every fifth step."""
    counts = {}
    for interval in (1, 5):
        model = mlp()
        method = create_method("aswl", model, total_steps=100, target_sparsity=0.9,
                               attention_interval=5, mask_interval=interval)
        seen_counts = []
        method.estimator.observe(lambda estimator, statistic, out=seen_counts:
                                 out.append(float(estimator.count.sum())))
        train(method, model, 10)
        assert len(seen_counts) == 2
        counts[interval] = seen_counts[1]
    # the bands barely move over five steps: five steps' worth against one
    assert counts[1] / counts[5] == pytest.approx(5.0, rel=0.2)


def test_observers_see_every_statistic_and_it_is_the_band_average():
    model = mlp()
    method = create_method("aswl", model, total_steps=100, target_sparsity=0.9,
                           attention_interval=4)
    seen = []
    method.estimator.observe(lambda estimator, statistic: seen.append(statistic.clone()))
    train(method, model, 12)
    assert len(seen) == 3 and all(s.shape == (3,) for s in seen)
    assert all(bool(torch.isfinite(s).all()) and bool((s != 0).any()) for s in seen)


def test_estimator_learns_a_split():
    model = mlp()
    method = create_method("aswl", model, total_steps=80, target_sparsity=0.9,
                           attention_interval=2)
    train(method, model, 80)
    assert len(set(method.attentions().values())) > 1


def test_state_round_trip_keeps_frozen_and_statistic():
    model = mlp()
    method = create_method("aswl", model, total_steps=40, target_sparsity=0.9, ramp_end=0.5)
    train(method, model, 13)
    state = method.state_dict()
    other = create_method("aswl", mlp(), total_steps=40, target_sparsity=0.9, ramp_end=0.5)
    other.load_state_dict(state)
    assert other.state_dict()["statistic"] == method.state_dict()["statistic"]
    assert other.frozen == method.frozen
    train(method, model, 10)
    other.load_state_dict(method.state_dict())
    assert other.frozen


def test_masks_follow_the_weights_every_step_at_the_last_threshold():
    model = mlp()
    method = create_method("aswl", model, total_steps=100, target_sparsity=0.9,
                           count_interval=4, attention_interval=50)
    train(method, model, 8)  # step 8: a count update
    thresholds = {name: float(t) for name, t in method.layer_masks.thresholds.items()}
    train(method, model, 1)  # step 9: same thresholds, masks follow the moved weights
    assert {name: float(t) for name, t in method.layer_masks.thresholds.items()} == thresholds
    for name, module in method.layers.items():
        weight = module.parametrizations.weight.original.detach()
        expected = weight.abs() >= thresholds[name]
        assert torch.equal(method.masks[name].mask, expected)
    train(method, model, 3)  # step 12: counts and thresholds recomputed
    assert {name: float(t) for name, t in method.layer_masks.thresholds.items()} != thresholds


def bn_convnet():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16),
                         nn.ReLU(), nn.Conv2d(16, 32, 3, padding=1, bias=False),
                         nn.BatchNorm2d(32), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(32, 10))


def dead_units(method):
    return {name: int((method.masks[name].mask.reshape(m.weight.shape[0], -1).sum(1) == 0)
                      .sum()) for name, m in method.layers.items()}


def test_every_output_unit_keeps_a_weight_through_the_ramp_and_the_target_is_exact():
    model = bn_convnet()
    method = create_method("aswl", model, total_steps=30, target_sparsity=0.97)
    optimizer = torch.optim.SGD(method.weight_parameters(), lr=0.1, momentum=0.9)
    generator = torch.Generator().manual_seed(2)
    x, y = torch.randn(16, 3, 8, 8, generator=generator), torch.randint(0, 10, (16,))
    for _ in range(30):
        training_step(model, method, optimizer, x, y)
        dead = dead_units(method)
        assert method.unit_layers == {"0", "3"} and dead["0"] == dead["3"] == 0
    method.finalize()
    numel = sum(method.numels.values())
    kept = sum(r["nonzero"] for r in method.layer_report())
    assert abs(kept - 0.03 * numel) <= len(method.layers) * 0.5 + 1e-9


def test_the_option_off_leaves_dead_units_and_on_keeps_them():
    def finalized(**options):
        model = bn_convnet()
        with torch.no_grad():  # one channel of the second conv is far smaller than the rest
            model[3].weight[0].mul_(1e-6)
        method = create_method("aswl", model, total_steps=4, target_sparsity=0.97,
                               freeze_after_ramp=False, **options)
        with pytest.warns(UserWarning, match="before any step"):
            method.finalize()
        return dead_units(method)

    assert finalized(keep_every_unit=False)["3"] >= 1
    assert finalized()["3"] == 0


def test_unit_layers_are_those_before_a_batchnorm_and_their_minimum_covers_every_row():
    forced = create_method("aswl", bn_convnet(), total_steps=4, target_sparsity=0.98)
    assert forced.unit_layers == {"0", "3"}  # the convs before a BatchNorm, not the Linear
    assert not create_method("aswl_paper", bn_convnet(), total_steps=4).unit_layers
    assert create_method("aswl", mlp(), total_steps=4, target_sparsity=0.9).unit_layers == set()
    everywhere = create_method("aswl", mlp(), total_steps=4, target_sparsity=0.9,
                               keep_every_unit=True, min_kept=1)
    assert everywhere.unit_layers == {"0", "2", "4"}
    assert everywhere.min_counts == {"0": 100, "2": 40, "4": 10}  # min_kept=1 is raised


def whole_and_resumed(build, inputs, lr, first, second):
    """The same run straight through (first + second steps) and saved after ``first`` steps
    then resumed in fresh objects for ``second``; ``build()`` -> (model, method)."""
    def run(steps, state=None):
        model, method = build()
        optimizer = torch.optim.SGD(method.weight_parameters(), lr=lr, momentum=0.9)
        if state is not None:
            model.load_state_dict(state["model"])
            method.load_state_dict(state["method"])
            optimizer.load_state_dict(state["optimizer"])
        for _ in range(steps):
            training_step(model, method, optimizer, *inputs)
        return {"model": model.state_dict(), "method": method.state_dict(),
                "optimizer": optimizer.state_dict()}, method

    _, whole = run(first + second)
    state, _ = run(first)
    _, resumed = run(second, state)
    return whole, resumed, state


def test_resume_restores_the_rows_kept_between_count_updates():
    def build():
        model = bn_convnet()
        return model, create_method("aswl", model, total_steps=40, target_sparsity=0.98,
                                    attention_interval=8)  # steps 22 and 23 reuse the rows

    generator = torch.Generator().manual_seed(3)
    inputs = torch.randn(8, 3, 8, 8, generator=generator), torch.randint(0, 10, (8,))
    whole, resumed, state = whole_and_resumed(build, inputs, 0.5, 21, 2)
    assert state["method"]["unit_index"]
    for name in whole.layers:
        assert torch.equal(whole.masks[name].mask, resumed.masks[name].mask)


def exact_lamp_kept(model, layers, kept):
    """Per-layer kept counts of one exact global top-k over every layer's LAMP scores."""
    scores = [lamp_scores(dense_weight(model.get_submodule(name))).reshape(-1)
              for name in layers]
    threshold = torch.cat(scores).topk(kept).values[-1]
    return [int((s >= threshold).sum()) for s in scores]


def test_lamp_densities_match_an_exact_global_lamp_threshold_and_a_sample_estimates_it():
    torch.manual_seed(0)
    weights = [torch.randn(300) * 3, torch.randn(5000), torch.randn(40000) * 0.1]
    sizes = [w.numel() for w in weights]
    kept = round(0.1 * sum(sizes))
    scores = torch.cat([lamp_scores(w) for w in weights])
    threshold = scores.topk(kept).values[-1]
    exact = torch.tensor([float((lamp_scores(w) >= threshold).double().mean())
                          for w in weights], dtype=torch.float64)
    torch.testing.assert_close(lamp_densities(weights, sizes, kept), exact, atol=1e-4, rtol=0)
    samples = [w if w.numel() <= 4096 else w[torch.randperm(w.numel())[:4096]] for w in weights]
    torch.testing.assert_close(lamp_densities(samples, sizes, kept), exact, atol=5e-3, rtol=0)
    assert lamp_densities(weights, sizes, sum(sizes)).tolist() == [1.0, 1.0, 1.0]
    # unsampled, the kept count is exactly the budget: the threshold's own weight included
    kept_counts = lamp_densities(weights, sizes, kept) * torch.tensor(sizes, dtype=torch.float64)
    assert float(kept_counts.sum()) == pytest.approx(kept)
    assert lamp_densities([torch.tensor([3.0, 2.0, 1.0]), torch.tensor([5.0, 4.0])], [3, 2],
                          3.0).mul(torch.tensor([3.0, 2.0])).sum().item() == pytest.approx(3.0)


def test_lamp_prior_with_equal_attentions_gives_lamp_split_and_attentions_correct_it():
    torch.manual_seed(0)  # every layer fits the estimator's sample: the prior is exact LAMP
    model = nn.Sequential(nn.Linear(200, 15), nn.ReLU(), nn.Linear(15, 40), nn.ReLU(),
                          nn.Linear(40, 10))
    numel = 200 * 15 + 15 * 40 + 40 * 10
    # no freeze: finalize sets the masks from the prior of the final weights
    method = create_method("aswl", model, total_steps=40, target_sparsity=0.9, prior="lamp",
                           attention_lr=0.0, min_kept=1, freeze_after_ramp=False)
    train(method, model, 40)
    method.finalize()
    kept = [r["nonzero"] for r in method.layer_report()]
    expected = exact_lamp_kept(model, method.layers, round(0.1 * numel))
    assert abs(sum(kept) - 0.1 * numel) <= len(kept)  # each layer's count is rounded
    assert all(abs(k - e) <= 1 for k, e in zip(kept, expected)), (kept, expected)
    assert len({round(k / n, 2) for k, n in zip(kept, [3000, 600, 400])}) == 3  # not uniform
    # learned attentions move the split away from LAMP's, keeping the exact target
    model = mlp()
    learned = create_method("aswl", model, total_steps=80, target_sparsity=0.95, prior="lamp",
                            attention_interval=2, min_kept=1)
    train(learned, model, 80)
    learned.finalize()
    assert len(set(learned.attentions().values())) > 1
    kept = sum(r["nonzero"] for r in learned.layer_report())
    assert abs(kept - 0.05 * (200 * 100 + 100 * 40 + 40 * 10)) <= 3


def test_lamp_prior_is_refused_in_the_paper_variant():
    with pytest.raises(ConfigError, match="prior"):
        create_method("aswl_paper", mlp(), prior="lamp")


def test_lamp_prior_resume_is_exact():
    def build():
        model = mlp()
        return model, create_method("aswl", model, total_steps=40, target_sparsity=0.95,
                                    prior="lamp", attention_lr=0.3, count_interval=4,
                                    attention_interval=8)  # step 15 uses the saved prior

    whole, resumed, state = whole_and_resumed(build, batch(), 0.05, 13, 10)
    assert len(set(state["method"]["prior"])) == 3
    assert resumed.attentions() == whole.attentions()
    for name in whole.layers:
        assert torch.equal(whole.masks[name].mask, resumed.masks[name].mask)


def test_a_state_from_before_the_prior_loads_with_a_warning(caplog):
    model = mlp()
    method = create_method("aswl", model, total_steps=40, target_sparsity=0.9)
    train(method, model, 5)
    state = method.state_dict()
    del state["prior"]  # as saved by versions before the LAMP prior
    other = create_method("aswl", mlp(), total_steps=40, target_sparsity=0.9)
    with caplog.at_level("WARNING"):
        other.load_state_dict(state)
    assert "method.prior=uniform" in caplog.text
    assert other.prior.tolist() == [1.0, 1.0, 1.0]  # not yet: recomputed at the next update
    other.update_masks()
    assert len(set(other.prior.tolist())) == 3
