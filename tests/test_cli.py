"""Small CLI and API behaviours: light --version/--help, config docs, method options,
did-you-mean, sparsify's warnings and refusals."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch
from torch import nn

import aswl
from aswl.config import ConfigError


@pytest.mark.parametrize("flag", ["--version", "--help"])
def test_version_and_help_import_no_torch(flag) -> None:
    code = (f"import sys; sys.argv = ['aswl', {flag!r}]\n"
            "from aswl.cli import main\n"
            "try:\n    main()\nexcept SystemExit:\n    pass\n"
            "print('TORCH' if 'torch' in sys.modules else 'LIGHT')")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout
    assert out.strip().endswith("LIGHT")


def test_export_formats_agree() -> None:
    from aswl.cli_export import EXPORT_FORMATS
    from aswl.export.deploy import FORMATS

    assert EXPORT_FORMATS == FORMATS


def test_config_docs_keep_the_whole_first_sentence_and_say_what_null_means(capsys) -> None:
    from aswl.cli import main

    assert main(["config", "--config", "mnist_lenet300"]) == 0
    out = capsys.readouterr().out
    line = next(each for each in out.splitlines() if each.strip().startswith("prior:"))
    assert "the split the attentions correct" in line.lower()
    assert not any(each.strip().startswith("estimator:") for each in out.splitlines())
    for key in ("attention_interval", "scale_output", "max_ratio", "min_kept",
                "keep_every_unit"):
        line = next(each for each in out.splitlines() if each.strip().startswith(key + ":"))
        assert "null:" in line, line


def test_methods_lists_their_options(capsys) -> None:
    from aswl.cli import main

    assert main(["methods"]) == 0
    out = capsys.readouterr().out
    assert "options:" in out and "target_sparsity" in out and "init_attention" in out


def test_unknown_key_suggests_the_close_one() -> None:
    from aswl.configs import resolve_config
    from aswl.train import load_config

    with pytest.raises(ConfigError, match="did you mean `epochs`"):
        load_config(resolve_config("mnist_lenet300"), ["epoch=3"])


def _model_and_optimizer():
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    return model, torch.optim.SGD(model.parameters(), lr=0.1)


def test_sparsify_without_total_steps_warns() -> None:
    model, optimizer = _model_and_optimizer()
    with pytest.warns(UserWarning, match="total_steps not given") as caught:
        method = aswl.sparsify(model, optimizer, target_sparsity=0.5)
    assert any("total_steps=epochs * len(loader)" in str(w.message) for w in caught)
    assert method.total_steps == 1  # the whole schedule at the first mask update


def test_a_second_sparsify_says_already_masked() -> None:
    model, optimizer = _model_and_optimizer()
    aswl.sparsify(model, optimizer, total_steps=4, target_sparsity=0.5)
    fresh = torch.optim.SGD(model.parameters(), lr=0.1)  # (the same one: "already carries")
    with pytest.raises(ConfigError, match="already masked"):
        aswl.sparsify(model, fresh, total_steps=4, target_sparsity=0.5)


def test_export_before_a_step_does_not_ask_sparsify_users_for_method_step() -> None:
    model, optimizer = _model_and_optimizer()
    method = aswl.sparsify(model, optimizer, total_steps=4, target_sparsity=0.5)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        method.export()
    text = " ".join(str(w.message) for w in caught)
    assert "before any step" in text and "sparsify steps the method" in text
    assert "Call method.step()" not in text
