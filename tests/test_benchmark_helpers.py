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
