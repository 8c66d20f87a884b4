"""What the integration tests share: a tiny model and data, and the explicit reference loop."""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aswl.methods import SparseMethod, create_method

STEPS = 24


class Net(nn.Module):
    """A small conv + linear net (two prunable kinds, a BatchNorm, a bias)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(1, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.fc1 = nn.Linear(8 * 4 * 4, 64)
        self.fc2 = nn.Linear(64, 4)

    def forward(self, x: Tensor) -> Tensor:
        x = F.max_pool2d(F.relu(self.bn(self.conv(x))), 2)
        return self.fc2(F.relu(self.fc1(x.flatten(1))))


def make_net(seed: int = 0) -> Net:
    torch.manual_seed(seed)
    return Net()


def make_batches(steps: int = STEPS, batch: int = 8, seed: int = 1) -> list[tuple[Tensor, Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [(torch.randn(batch, 1, 8, 8, generator=gen), torch.randint(0, 4, (batch,),
                                                                        generator=gen))
            for _ in range(steps)]


def explicit_loop(model: nn.Module, batches: list[tuple[Tensor, Tensor]], method_name: str,
                  lr: float = 0.05, **options: object) -> SparseMethod:
    """The four explicit calls of the README's long form, on ``model`` (changed in place)."""
    method = create_method(method_name, model, total_steps=len(batches), **options)
    optimizer = torch.optim.SGD(method.weight_parameters(), lr=lr, momentum=0.9)
    for x, y in batches:
        loss = F.cross_entropy(model(x), y) + method.regularizer()
        optimizer.zero_grad()
        method.zero_grad()
        loss.backward()
        method.after_backward()
        optimizer.step()
        method.step(optimizer)
    method.finalize()
    return method


def assert_same_export(a: SparseMethod, b: SparseMethod, exact: bool = True) -> None:
    """Same masks, same sparsity, same exported tensors (bit for bit when ``exact``).

    ``b`` may wrap the network as ``.net`` (the Lightning and HF test models do).
    """
    assert a.global_sparsity() == b.global_sparsity()
    assert len(a.layers) == len(b.layers)
    for name_a, name_b in zip(a.layers, b.layers):
        assert name_b.removeprefix("net.") == name_a
        assert torch.equal(a.masks[name_a].mask, b.masks[name_b].mask), name_a
    sa = a.export().state_dict()
    sb = {k.removeprefix("net."): v for k, v in b.export().state_dict().items()}
    assert sa.keys() == sb.keys()
    for key in sa:
        if exact:
            assert torch.equal(sa[key], sb[key]), key
        else:
            torch.testing.assert_close(sa[key], sb[key], rtol=1e-5, atol=1e-6)


def clone(model: nn.Module) -> nn.Module:
    return copy.deepcopy(model)


def assert_same_resumed_state(reference: SparseMethod, resumed: SparseMethod, steps: int) -> None:
    """A resumed run ends where the uninterrupted one ends: the same step count and sparsity,
    the same dense weights, masks and method parameters bit for bit, the same attentions."""
    assert resumed.step_count == reference.step_count == steps
    assert resumed.global_sparsity() == reference.global_sparsity() > 0.5

    def layer_state(method: SparseMethod) -> dict[str, Tensor]:
        return {f"{name}.{key}": value.detach().clone()
                for name, module in method.layers.items()
                for key, value in module.parametrizations.weight.state_dict().items()}

    want, got = layer_state(reference), layer_state(resumed)
    assert want.keys() == got.keys()
    for key in want:
        assert torch.equal(want[key], got[key]), key
    assert resumed.attentions() == reference.attentions()
