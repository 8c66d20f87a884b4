"""The layer table's FLOPs agree with torch.utils.flop_counter (2 FLOPs per multiply-add)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from aswl.export.report import layer_flops, layer_table
from aswl.models import create_model


class Depthwise(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, stride=2, padding=1)
        self.dw = nn.Conv2d(8, 8, 3, padding=1, groups=8)
        self.pw = nn.Conv2d(8, 16, 1)
        self.fc = nn.Linear(16 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(self.pw(self.dw(self.stem(x))).flatten(1))


def _counted(model: nn.Module, shape: tuple[int, ...]) -> int:
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(torch.zeros(1, *shape))
    return counter.get_total_flops()


@pytest.mark.parametrize("name,shape", [("lenet300", (1, 28, 28)), ("lenet5", (1, 28, 28)),
                                        ("depthwise", (3, 16, 16))])
def test_flops_match_torch_flop_counter(name: str, shape: tuple[int, ...]) -> None:
    model = Depthwise() if name == "depthwise" else create_model(name, input_shape=shape)
    names = [n for n, m in model.named_modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    ours = layer_flops(model, names, shape)
    assert sum(ours.values()) == _counted(model, shape)


def test_sparse_flops_scale_with_the_nonzeros() -> None:
    model = create_model("lenet300")
    with torch.no_grad():
        model.fc1.weight[:, : 784 // 2] = 0  # half of fc1 zero
    rows = {r["name"]: r for r in layer_table(model, ["fc1", "fc2", "fc3"], (1, 28, 28), {})}
    assert rows["fc1"]["flops_dense"] == 2 * 784 * 300
    assert rows["fc1"]["flops_sparse"] == rows["fc1"]["flops_dense"] // 2
    assert rows["fc2"]["flops_sparse"] == rows["fc2"]["flops_dense"] == 2 * 300 * 100
