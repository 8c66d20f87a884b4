"""Which channels channel mode may remove (aswl.sparse.channel_graph)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from aswl.methods import ConfigError
from aswl.sparse.channel_graph import find_groups, output_layers

pytest.importorskip("torch_pruning")


def conv_classifier() -> nn.Sequential:
    """SqueezeNet's ending: the classes come from a conv, then ReLU, pooling, flatten."""
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(),
                         nn.Conv2d(8, 5, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())


def test_the_output_layer_is_found_through_pooling_and_activations() -> None:
    assert output_layers(conv_classifier(), torch.zeros(1, 3, 8, 8)) == ["2"]


def test_the_output_layer_is_found_when_every_parameter_is_frozen() -> None:
    model = conv_classifier().requires_grad_(False)
    assert output_layers(model, torch.zeros(1, 3, 8, 8)) == ["2"]


def test_both_heads_of_a_two_headed_model_are_outputs() -> None:
    class TwoHeads(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.body = nn.Linear(4, 8)
            self.a, self.b = nn.Linear(8, 2), nn.Linear(8, 3)

        def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            h = torch.relu(self.body(x))
            return self.a(h), self.b(h).sigmoid()

    assert output_layers(TwoHeads(), torch.zeros(1, 4)) == ["a", "b"]


def test_groups_kept_whole_are_reported_with_the_reason() -> None:
    model = conv_classifier()
    refused: dict[str, str] = {}
    layers = {n: m for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
    groups = find_groups(model, torch.zeros(1, 3, 8, 8), layers, refused)
    assert [g.name for g in groups] == ["0"]
    assert "output" in refused["2"]


def test_a_model_failing_on_its_example_inputs_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="example_inputs"):
        find_groups(conv_classifier(), torch.zeros(1, 4, 8, 8), {})
