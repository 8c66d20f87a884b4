"""The method registry: one decorator, keyed by name and structure."""

from __future__ import annotations

import pytest

from aswl.methods import ConfigError, list_methods, method_for
from aswl.methods.base import SparseMethod
from aswl.methods.channel import ChannelMethod
from aswl.methods.registry import ALIASES, METHODS, register_method, structure_of


@pytest.fixture
def scratch_registry():
    before, aliases = dict(METHODS), set(ALIASES)
    yield
    METHODS.clear()
    METHODS.update(before)
    ALIASES.clear()
    ALIASES.update(aliases)


def test_a_channel_method_registered_by_the_decorator_alone_resolves_as_channel(scratch_registry):
    @register_method("my_channels", structure="channel")
    class Mine(ChannelMethod):
        pass

    assert structure_of("my_channels") == "channel"
    assert method_for("my_channels") is Mine is method_for("my_channels", "channel")
    assert "my_channels" in list_methods("channel") and "my_channels" not in list_methods("weight")
    with pytest.raises(ConfigError, match="prunes whole channels: set structure = 'channel'"):
        method_for("my_channels", "weight")


def test_one_name_two_granularities_and_the_old_channel_name():
    weight, channel = method_for("aswl", "weight"), method_for("aswl", "channel")
    assert weight is not channel and channel.structure == "channel"
    assert method_for("aswl_channel") is channel and structure_of("aswl") == "weight"
    assert "aswl_channel" not in list_methods()
    with pytest.raises(ConfigError, match="'gmp' has no channel mode"):
        method_for("gmp", "channel")
    with pytest.raises(ConfigError, match="unknown method 'nope'"):
        method_for("nope")


def test_registering_a_name_twice_at_one_structure_is_an_error(scratch_registry):
    with pytest.raises(ValueError, match="'gmp' registered twice"):
        register_method("gmp")(type("Again", (SparseMethod,), {}))
