"""Schedules own *when*: one rounding rule, and ``done`` fires where the sparsity stops
changing, for every method."""

import importlib.util

import pytest
import torch
from torch import nn

from aswl.methods import ConfigError, create_method, list_methods
from aswl.methods.registry import structure_of
from aswl.sparse.schedules import (
    CosineDecay,
    Every,
    Freeze,
    Gradual,
    Never,
    OneShot,
    Periodic,
    Rounds,
    at_step,
    build_schedule,
    gradual,
)
from aswl.train.step import training_step


def mlp():
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 32), nn.ReLU(),
                         nn.Linear(32, 4))


def first_final_step(schedule, steps):
    """The first step from which the sparsity never changes again."""
    values = [schedule.sparsity(t) for t in range(steps + 1)]
    return next(t for t in range(steps + 1) if all(v == values[-1] for v in values[t:]))


def test_ten_steps_done_and_freeze_fire_where_the_sparsity_stops_changing():
    schedule = build_schedule("cubic", 0.9, 10, 0.0, 0.75)
    assert at_step(0.75, 10) == 7 and schedule.end_step == 7
    final = first_final_step(schedule, 10)
    assert final == 7
    assert [t for t in range(11) if schedule.done(t)] == list(range(final, 11))
    # ASWL (target) freezes at that very step, and its masks then keep exactly the target
    model = mlp()
    method = create_method("aswl", model, total_steps=10, target_sparsity=0.9, ramp_end=0.75)
    optimizer = torch.optim.SGD(method.weight_parameters(), lr=0.05)
    x, y = torch.randn(16, 20), torch.randint(0, 4, (16,))
    frozen_at = None
    for step in range(1, 11):
        training_step(model, method, optimizer, x, y)
        if method.frozen and frozen_at is None:
            frozen_at = step
    assert frozen_at == final
    assert method.sparsity_now() == pytest.approx(0.9)


@pytest.mark.parametrize("schedule", [
    gradual(0.8, 2, 7, interval=1), gradual(0.8, 0, 7, interval=1, shape="constant"),
    OneShot(0.8, 5), Rounds(0.8, (3, 5, 7)), Periodic(0.8, 2, 7), Never()])
def test_done_is_absorbing_and_no_sparsity_change_after_it(schedule):
    done = [t for t in range(12) if schedule.done(t)]
    assert done == list(range(done[0], 12))
    assert len({schedule.sparsity(t) for t in range(done[0], 12)}) == 1
    assert first_final_step(schedule, 11) <= done[0]
    assert not any(schedule.update_due(t) for t in range(done[0] + 1, 12)) or \
        isinstance(schedule, Gradual)  # gradual masks may still follow the weights


def test_one_shot_and_rounds_update_exactly_at_their_steps():
    assert [t for t in range(10) if OneShot(0.5, 4).update_due(t)] == [4]
    three = Rounds(0.875, (2, 4, 6))
    assert [t for t in range(10) if three.update_due(t)] == [2, 4, 6]
    assert [round(three.sparsity(t), 3) for t in (1, 2, 4, 6)] == [0.0, 0.5, 0.75, 0.875]


@pytest.mark.parametrize("method, option", [
    ("magnitude", "mask_interval"), ("magnitude", "schedule"), ("magnitude", "ramp_end"),
    ("imp", "mask_interval"), ("imp", "schedule"), ("snip", "ramp_begin"),
    ("snip", "mask_interval"), ("rigl", "mask_interval"), ("rigl", "ramp_begin"),
    ("rigl", "schedule"), ("lamp", "scope"), ("aswl_paper", "prior")])
def test_an_option_the_method_does_not_use_is_an_error_naming_both(method, option):
    with pytest.raises(ConfigError, match=f"method '{method}' does not use.*'{option}'"):
        create_method(method, mlp(), total_steps=10, **{option: 1})


def test_every_method_builds_a_schedule_that_answers_the_three_questions():
    for name in list_methods():
        channel = structure_of(name) == "channel"  # channel-only methods trace the model
        if channel and importlib.util.find_spec("torch_pruning") is None:
            continue
        options = {"structure": "channel", "example_inputs": torch.zeros(1, 20)} if channel else {}
        method = create_method(name, mlp(), total_steps=20, **options)
        schedule = method.schedule
        assert 0.0 <= schedule.sparsity(10) < 1.0
        assert isinstance(schedule.update_due(10), bool) and schedule.done(20), name


def test_the_other_timing_rules_are_pure_functions_of_the_step():
    ramp = gradual(0.9, 100, 612, interval=2)
    attention = Every.spread(ramp.ramp_steps(), multiple=2, updates=512)
    assert attention.interval == 2 and attention.due(4) and not attention.due(5)
    assert Every.spread(gradual(0.9, 0, 7000, shape="constant").ramp_steps(), 4, 512).interval == 4
    assert Every.spread(7000, 4, 512).interval == 12
    freeze = Freeze(ramp)
    assert [t for t in (611, 612, 700) if freeze.due(t)] == [612, 700]
    assert not Freeze(ramp, enabled=False).due(700)
    decay = CosineDecay(0.3, 80)
    assert decay.value(0) == pytest.approx(0.3) and decay.value(80) == pytest.approx(0.0)
    assert CosineDecay(0.3, 0).value(5) == 0.0
    with pytest.raises(ValueError, match="unknown sparsity schedule 'linear'"):
        gradual(0.5, 0, 10, shape="linear")
