"""ASWL's rooms through their public faces: the stateless allocation, the band estimator
(state and observers), the paper variant with the loss-aware estimator, and the sampled
threshold that any method can use."""

import pytest
import torch
from torch import nn

from aswl.methods import create_method
from aswl.methods.aswl.allocation import floor_attentions, project_to_budget, raw_densities
from aswl.methods.dpf import DPF
from aswl.sparse.threshold import LayerMasks
from aswl.train.step import training_step


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(300, 100), nn.ReLU(), nn.Linear(100, 10))


def train(method, model, steps):
    optimizer = torch.optim.SGD(method.weight_parameters(), lr=0.05, momentum=0.9)
    generator = torch.Generator().manual_seed(1)
    x, y = torch.randn(32, 300, generator=generator), torch.randint(0, 10, (32,),
                                                                   generator=generator)
    for _ in range(steps):
        training_step(model, method, optimizer, x, y)


def test_allocation_is_stateless_and_the_floor_lift_reaches_the_edge():
    attention = torch.tensor([0.02, 0.5, 0.9])
    raw = raw_densities(attention, 1.0, 1.0, prior=torch.tensor([1.0, 0.5, 0.2]))
    assert torch.allclose(raw, torch.tensor([0.02, 0.25, 0.18]))
    numel, floor = torch.tensor([1000.0, 1000.0, 1000.0]), [0.1, 0.001, 0.001]
    projected = project_to_budget(raw, numel, 0.3, floor)
    assert float((projected * numel).sum()) == pytest.approx(900.0)  # the budget, exactly
    assert float(projected[0]) == pytest.approx(0.1)  # held at its floor
    lifted = floor_attentions(raw, numel, 0.3, floor, torch.ones(3), 1.0)
    assert lifted[1] is None and lifted[2] is None and lifted[0] > 0.02
    edge = raw_densities(torch.tensor([lifted[0], 0.5, 0.9]), 1.0, 1.0,
                         prior=torch.tensor([1.0, 0.5, 0.2]))
    again = project_to_budget(edge, numel, 0.3, floor)
    assert torch.allclose(again, projected, atol=1e-6)  # the lift changes no density


def test_estimator_state_round_trip_and_observers():
    model = mlp()
    method = create_method("aswl", model, total_steps=40, target_sparsity=0.9,
                           attention_interval=5)
    seen = []
    method.estimator.observe(lambda estimator, statistic: seen.append(statistic))
    train(method, model, 7)
    assert len(seen) == 1 and method.estimator.bands
    other = create_method("aswl", mlp(), total_steps=40, target_sparsity=0.9,
                          attention_interval=5)
    other.estimator.load_state_dict(method.estimator.state_dict())
    assert other.estimator.state_dict() == method.estimator.state_dict()
    assert float(method.estimator.count.sum()) > 0  # two steps accumulated since the read


def test_paper_variant_learns_from_the_estimator_when_asked():
    for estimator, has in (("paper", False), ("loss_aware", True)):
        model = mlp()
        method = create_method("aswl_paper", model, total_steps=20, estimator=estimator)
        assert (method.estimator is not None) == has
        train(method, model, 4)
        assert sorted(method.state_dict()) == sorted(create_method(
            "aswl", mlp(), total_steps=20).state_dict())  # one state layout for both


class SampledDPF(DPF):
    """A baseline on the sampled threshold: all any method needs to use it."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.layer_masks = LayerMasks(self.numels, {n: m.weight.device
                                                    for n, m in self.layers.items()},
                                      sample_size=2000)

    def approximate_masks(self) -> bool:
        return not self.schedule.done(self.step_count)


def test_any_method_can_use_the_sampled_threshold():
    model = mlp()
    method = SampledDPF(model, total_steps=10, target_sparsity=0.8).prepare()
    method.step_count = 3
    method.update_masks()
    kept = int(method.masks["0"].mask.sum())
    assert kept != method.kept["0"] and kept == pytest.approx(method.kept["0"], rel=0.1)
    assert int(method.masks["2"].mask.sum()) == method.kept["2"]  # small: exact
    method.step_count = 10  # the schedule is done: exact
    method.update_masks()
    assert int(method.masks["0"].mask.sum()) == method.kept["0"]
