"""The run config (aswl.config, aswl.safe_yaml, aswl.checks): what a config file or --set may
hold, and how a wrong one is named without echoing the file."""

from __future__ import annotations

import pytest

from aswl.checks import ConfigError
from aswl.config import load_config


def config_file(tmp_path, text: str):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    return path


def test_a_key_given_twice_is_refused_naming_both_lines(tmp_path):
    path = config_file(tmp_path, "lr: 0.1\nepochs: 2\nlr: 0.007\n")
    with pytest.raises(ConfigError, match=r"the key 'lr' is given twice \(lines 1 and 3\)"):
        load_config(path)
    nested = config_file(tmp_path, "method:\n  name: aswl\n  alpha: 1\n  alpha: 2\n")
    with pytest.raises(ConfigError, match=r"'alpha' is given twice \(lines 3 and 4\)"):
        load_config(nested)
    with pytest.raises(ConfigError, match="given twice"):
        load_config(None, ["model_args={width: 1, width: 2}"])


def test_a_null_key_is_named_null(tmp_path):
    with pytest.raises(ConfigError, match=r"unknown config key\(s\) null;"):
        load_config(config_file(tmp_path, "epochs: 2\n~: 2\n"))
    with pytest.raises(ConfigError, match=r"does not use option\(s\) null;"):
        load_config(config_file(tmp_path, "method: {name: aswl, null: 1}\n"))


def test_a_file_that_is_not_a_config_is_named_without_its_content(tmp_path):
    secret = "$6$saltsalt$Xq1hashhashhash"
    for text in (f"root: {secret}\nbob: x\n",  # a mapping of no config key
                 f"epochs: 2\n\"root:{secret}\": 1\n",  # one key that is not a name
                 f"root:x:0:0:root:/root:/bin/bash\nbob: {secret}: x\n"):  # not YAML
        path = config_file(tmp_path, text)
        with pytest.raises(ConfigError) as info:
            load_config(path)
        message = str(info.value)
        assert "\n" not in message and secret not in message and "root:" not in message
    assert "holds none of the config keys" in str(
        pytest.raises(ConfigError, load_config, config_file(tmp_path, "a: 1\n")).value)


def test_an_option_dense_does_not_use_is_an_error():
    with pytest.raises(ConfigError, match="method 'dense' does not use option "
                       "'target_sparsity'"):
        load_config(None, ["method=dense", "method.target_sparsity=0.5"])
    with pytest.raises(ConfigError, match="method 'dense' does not use"):
        load_config(None, ["method=dense", "method.alpha=2"])
    assert load_config(None, ["method=dense"]).method == {"name": "dense"}


@pytest.mark.parametrize("key", ["num_classes", "input_shape"])
def test_model_args_may_not_set_what_aswl_sets(tmp_path, key):
    with pytest.raises(ConfigError, match=f"model_args.{key} is set by aswl"):
        load_config(config_file(tmp_path, f"model_args: {{{key}: 3}}\n"))


@pytest.mark.parametrize("setting", ["lr=1e300", "weight_decay=1e300", "lr_gamma=1e300",
                                     "warmup_epochs=1e300", "lr=.inf"])
def test_numbers_that_would_overflow_the_optimiser_are_bounded(setting):
    key = setting.split("=")[0]
    with pytest.raises(ConfigError, match=f"^{key} = .* is invalid: expected a"):
        load_config(None, [setting])
