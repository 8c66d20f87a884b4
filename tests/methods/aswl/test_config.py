"""The ASWL options' ranges (:mod:`aswl.methods.aswl.config`): a value beyond its upper bound
is a ConfigError naming the field and its range; values up to the bound pass."""

import pytest
from torch import nn

from aswl.methods import ConfigError, create_method
from aswl.methods.aswl.config import ASWLConfig, ASWLPaperConfig
from aswl.methods.channel import SlimmingConfig
from aswl.methods.channel_aswl import ASWLChannelConfig

ATTENTION_CONFIGS = [ASWLConfig, ASWLPaperConfig, ASWLChannelConfig]


@pytest.mark.parametrize("config_class", ATTENTION_CONFIGS)
def test_attention_lr_above_bound_is_refused(config_class):
    with pytest.raises(ConfigError, match=r"^method\.attention_lr = 1000000\.0 is invalid: "
                       r"expected a number in \[0, 10\]$"):
        config_class(attention_lr=1e6).validate()
    for good in (0.0, config_class().attention_lr, 0.3, 10.0):
        config_class(attention_lr=good).validate()


def test_attention_lr_above_bound_is_refused_when_the_method_is_built():
    model = nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 4))
    with pytest.raises(ConfigError, match="attention_lr"):
        create_method("aswl", model, total_steps=10, attention_lr=1e6)
    assert create_method("aswl", model, total_steps=10, attention_lr=0.05).config.attention_lr \
        == 0.05


BOUNDS = [  # (config classes, field, a value out of range, values in range, the range)
    (ATTENTION_CONFIGS, "alpha", 1000.0, (0.5, 2.0, 100.0), r"a number in \(0, 100\]"),
    (ATTENTION_CONFIGS, "attention_momentum", 1.0, (0.0, 0.9, 0.99), r"a number in \[0, 1\)"),
    (ATTENTION_CONFIGS, "attention_momentum", -0.1, (0.5,), r"a number in \[0, 1\)"),
    (ATTENTION_CONFIGS, "attention_interval", 10**7, (None, 1, 16, 10**6),
     r"null or an integer in \[1, 10\*\*6\]"),
    (ATTENTION_CONFIGS + [SlimmingConfig], "mask_interval", 10**7, (1, 16, 10**6),
     r"an integer in \[1, 10\*\*6\]"),
    ([ASWLConfig, ASWLPaperConfig], "count_interval", 10**7, (1, 4, 10**6),
     r"an integer in \[1, 10\*\*6\]"),
    ([ASWLConfig, ASWLPaperConfig], "weight_decay", 1e4, (None, 0.0, 2.5e-4, 1000.0),
     r"null or a number in \[0, 1000\]"),
    ([ASWLPaperConfig], "gamma", 1e4, (0.0, 0.1, 100.0, 1000.0), r"a number in \[0, 1000\]"),
    ([SlimmingConfig], "sparsity_penalty", 1e4, (0.0, 1e-5, 1e-4, 1000.0),
     r"a number in \[0, 1000\]"),
]


@pytest.mark.parametrize("config_classes, field, bad, good, allowed", BOUNDS,
                         ids=[f"{field}={bad}" for _, field, bad, _, _ in BOUNDS])
def test_other_options_above_bound_are_refused(config_classes, field, bad, good, allowed):
    for config_class in config_classes:
        with pytest.raises(ConfigError, match=rf"^method\.{field} = .* expected {allowed}$"):
            config_class(**{field: bad}).validate()
        for value in good:
            config_class(**{field: value}).validate()
