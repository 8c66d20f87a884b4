"""Small helpers of the benchmark scripts that published figures depend on."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from aswl.methods import create_method

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


def load(name: str):
    sys.path.insert(0, str(BENCHMARKS))  # the scripts import each other by name
    try:
        spec = importlib.util.spec_from_file_location(f"bench_{name}", BENCHMARKS / f"{name}.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_overhead_method_tokens_carry_options():
    overhead = load("overhead")
    assert overhead.parse_method("aswl") == ("aswl", {})
    assert overhead.parse_method("aswl:prior=uniform+attention_lr=0") == (
        "aswl", {"prior": "uniform", "attention_lr": 0})


def test_start_split_sets_attentions_proportional_to_the_split_densities():
    select = load("select_defaults")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(20, 10), nn.ReLU(), nn.Linear(10, 5))
    method = create_method("aswl", model, total_steps=10, target_sparsity=0.9,
                           prior="uniform", attention_lr=0.0)
    select.start_at([50.0, 80.0])(method)  # densities 0.5 and 0.2
    assert method.attentions() == pytest.approx({"0": 1.0, "2": 0.4})
    with pytest.raises(SystemExit, match="2 prunable layers"):
        select.start_at([50.0])(method)


def test_trace_summary_reads_the_departure_from_the_decay_balance(capsys):
    trace = load("trace_split")
    torch.manual_seed(0)
    decay = torch.full((50, 2), -2e-6)
    noise = 1e-6 * torch.randn(50, 2)
    stats = decay + noise
    stats[:, 1] -= 3e-6  # layer 1 departs from the balance; layer 0 does not
    trace.summarize([90.0, 95.0], stats, decay)
    rows = [line.split() for line in capsys.readouterr().out.splitlines()[1:]]
    z = [float(row[-1]) for row in rows]
    assert abs(z[0]) < 3 and z[1] < -10
    assert float(rows[0][5]) == pytest.approx(-2.0)  # the decay term, x1e6


def test_trace_band_decay_uses_the_methods_own_decay_and_band():
    trace = load("trace_split")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(200, 50), nn.ReLU(), nn.Linear(50, 5))
    method = create_method("aswl", model, total_steps=100, target_sparsity=0.9)
    method.step_count = 50
    method.update_masks()
    sgd = trace.band_decay(method.estimator, {})
    own = trace.band_decay(method.estimator, {"weight_decay": 1e-3})
    assert torch.allclose(own, sgd * 2e-3 / 5e-4)


def test_overhead_table_headline_is_the_ratio_to_plain():
    overhead = load("overhead")
    model = nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    times = {"plain": [0.002, 0.002, 0.004], "dense": [0.003] * 3, "gmp": [0.005, 0.004, 0.009]}
    variants = [overhead.Variant("lenet300", name, None, model, None, optimizer, list(t))
                for name, t in times.items()]
    rows = {line.split("|")[2].strip(): [c.strip() for c in line.split("|")[1:-1]]
            for line in overhead.table(variants).splitlines()[2:]}
    assert rows["plain"][5] == "**1.00x**"
    assert rows["dense"][5] == "**1.50x**"  # medians 3 ms / 2 ms
    assert rows["gmp"][5] == "**2.50x**" and rows["gmp"][8] == "1.67x"  # and over dense


def test_ablation_variants_are_compare_tokens():
    ablation = load("ablation")
    assert ablation.variant_token("aswl", []) == "aswl"
    assert ablation.variant_token("aswl", ["method.prior=uniform", "method.attention_lr=0"]) \
        == "aswl:prior=uniform+attention_lr=0"
    names = ablation.all_variants()
    assert names["aswl (default)"] == "aswl"
    assert names["aswl_paper gamma=0.1"] == "aswl_paper:gamma=0.1"
    assert len(set(names.values())) == len(names)  # one run folder per variant


def test_select_defaults_jobs_are_trainer_configs():
    select = load("select_defaults")
    config = select.job_config("resnet20:8", "aswl", 0.98, 2, 3, {"prior": "uniform"}, 0.1,
                               128, 15000)
    assert (config.model, config.model_args, config.seed, config.epochs) == (
        "resnet20", {"width": 8}, 2, 3)
    assert config.method == {"name": "aswl", "prior": "uniform", "target_sparsity": 0.98}
    assert config.data.epoch_samples == 15000 and config.data.augment is False
    assert config.nesterov and config.lr_schedule == "cosine" and config.weight_decay == 5e-4
    assert select.job_config("bnnet", "dense", 0.0, 0, 1, {}, 0.05, 64, None).method == {
        "name": "dense"}
