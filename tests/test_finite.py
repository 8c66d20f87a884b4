"""The Python API refuses to hand back a broken model (issue 22, class 5): a NaN batch never
yields a silent NaN export, the non-finite warning comes once, a second attach is refused and
list options are checked element by element."""

from __future__ import annotations

import logging

import pytest
import torch
from torch import nn

import aswl
from aswl.finite import NonFiniteError
from aswl.integrations import attach
from aswl.methods import ConfigError


def model_and_optimizer():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 32), nn.ReLU(), nn.Linear(32, 4))
    return model, torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)


def test_a_nan_batch_never_yields_a_silent_nan_export(caplog):
    model, optimizer = model_and_optimizer()
    method = aswl.sparsify(model, optimizer, total_steps=40, target_sparsity=0.5,
                           attention_interval=1)
    generator = torch.Generator().manual_seed(0)
    with caplog.at_level(logging.WARNING):
        for step in range(40):
            x = torch.randn(8, 16, generator=generator)
            if step == 5:
                x[3, 0] = float("nan")  # one bad sample
            loss = nn.functional.cross_entropy(model(x), torch.randint(0, 4, (8,),
                                                                        generator=generator))
            loss.backward()
            optimizer.step()
            optimizer.zero_grad()
    method.finalize()
    with pytest.raises(NonFiniteError, match=r"non-finite weights .* in .*1\.weight"):
        method.export()
    warnings = [r for r in caplog.records if "non-finite" in r.getMessage()]
    assert len(warnings) == 1  # said once with its step, never once per step
    assert "at step 5" in warnings[0].getMessage()


def test_export_of_a_finite_model_is_unchanged():
    model, optimizer = model_and_optimizer()
    method = aswl.sparsify(model, optimizer, total_steps=4, target_sparsity=0.5)
    for _ in range(4):
        model(torch.randn(2, 16)).sum().backward()
        optimizer.step()
        optimizer.zero_grad()
    method.finalize()
    plain = method.export()
    assert all(torch.isfinite(p).all() for p in plain.parameters())


def test_a_second_attach_on_one_optimizer_is_refused():
    model, optimizer = model_and_optimizer()
    method = aswl.sparsify(model, optimizer, total_steps=10, target_sparsity=0.5)
    with pytest.raises(ConfigError, match="already carries a sparse method's hooks"):
        attach(method, optimizer)
    with pytest.raises(ConfigError, match="already carries"):
        aswl.sparsify(model, optimizer, total_steps=10, target_sparsity=0.5)
    for handle in method.step_hooks:  # detached: a new attach is fine
        handle.remove()
    attach(method, optimizer)


@pytest.mark.parametrize("option,value,says", [
    ("include", [["x"]], r"include\[0\]"), ("include", [1], r"include\[0\]"),
    ("exclude", ["1", 2], r"exclude\[1\]"),
])
def test_list_options_are_type_checked_element_by_element(option, value, says):
    model, optimizer = model_and_optimizer()
    with pytest.raises(ConfigError, match=says + ".*expected str"):
        aswl.sparsify(model, optimizer, total_steps=10, target_sparsity=0.5,
                      **{option: value})
