"""``--set init=PATH``: a run starts from trained weights, checked key by key."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from aswl.cli import main
from aswl.config import ConfigError
from aswl.configs import resolve_config
from aswl.models import create_model
from aswl.train import load_config
from aswl.train.init_weights import load_initial_weights
from aswl.train.loop import Trainer

TINY = ["progress=false", "data.limit_train=64", "data.limit_test=32", "batch_size=32",
        "epochs=1", "method.target_sparsity=0.5"]


def _trained(seed: int = 5) -> dict[str, torch.Tensor]:
    torch.manual_seed(seed)
    model = create_model("lenet300", num_classes=10, input_shape=(1, 28, 28))
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_a_run_starts_from_the_given_weights(tmp_path, suffix) -> None:
    state = _trained()
    path = tmp_path / f"trained{suffix}"
    if suffix == ".pt":
        torch.save({"state_dict": state}, path)
    else:
        save_file(state, str(path))
    config = load_config(resolve_config(None), [*TINY, f"init={path}"])
    trainer = Trainer(config, tmp_path / "run")
    for name, module in trainer.method.layers.items():  # the dense weights under the masks
        dense = module.parametrizations.weight.original
        assert torch.equal(dense.detach().cpu(), state[f"{name}.weight"]), name


def test_a_file_of_another_model_is_refused_key_by_key(tmp_path) -> None:
    state = _trained()
    state["extra.weight"] = torch.zeros(2)
    del state[next(iter(state))]
    path = tmp_path / "other.safetensors"
    save_file(state, str(path))
    model = create_model("lenet300", num_classes=10, input_shape=(1, 28, 28))
    with pytest.raises(ConfigError, match="missing keys.*unexpected keys \\['extra.weight'\\]"):
        load_initial_weights(model, path)
    key = next(k for k in _trained() if k.endswith("weight"))
    wrong = {**_trained(), key: torch.zeros(3, 3)}
    save_file(wrong, str(path))
    with pytest.raises(ConfigError, match="shape mismatches"):
        load_initial_weights(model, path)


def test_cli_reports_a_missing_init_file(tmp_path, capsys) -> None:
    code = main(["train", "--out", str(tmp_path / "r"), "--set", *TINY,
                 f"init={tmp_path / 'nowhere.pt'}"])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err
