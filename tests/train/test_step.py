"""The one step order (training_step): clipping, autocast and the fp16 overflow skip act."""

from __future__ import annotations

import pytest
import torch
from torch import Tensor, nn

from aswl.methods import create_method
from aswl.train.step import training_step


def mlp(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(20, 32), nn.ReLU(), nn.Linear(32, 4))


def batch() -> tuple[Tensor, Tensor]:
    gen = torch.Generator().manual_seed(7)
    return torch.randn(16, 20, generator=gen) * 10, torch.randint(0, 4, (16,), generator=gen)


def weights(model: nn.Module) -> list[Tensor]:
    return [p.detach().clone() for p in model.parameters()]


def test_grad_clip_bounds_the_update() -> None:
    lr, clip = 0.1, 1e-3
    updates = {}
    for grad_clip in (None, clip):
        model = mlp()
        method = create_method("dpf", model, total_steps=10, target_sparsity=0.5)
        optimizer = torch.optim.SGD(method.weight_parameters(), lr=lr)
        before = weights(model)
        training_step(model, method, optimizer, *batch(), grad_clip=grad_clip)
        updates[grad_clip] = torch.cat([(a - b).reshape(-1)
                                        for a, b in zip(weights(model), before)])
    assert float(updates[None].norm()) > 10 * lr * clip  # the plain update is much larger
    torch.testing.assert_close(updates[clip].norm(), torch.tensor(lr * clip), rtol=1e-3,
                               atol=0)


def test_autocast_runs_in_the_requested_dtype() -> None:
    model = mlp()
    method = create_method("aswl", model, total_steps=10, target_sparsity=0.5)
    optimizer = torch.optim.SGD(method.weight_parameters(), lr=0.01)
    seen: list[torch.dtype] = []
    model[0].register_forward_hook(lambda module, inputs, output: seen.append(output.dtype))
    training_step(model, method, optimizer, *batch(), amp_dtype=torch.bfloat16)
    training_step(model, method, optimizer, *batch())
    assert seen == [torch.bfloat16, torch.float32]
    assert all(p.dtype == torch.float32 for p in model.parameters())  # weights stay fp32


def test_fp16_overflow_skips_the_method_step() -> None:
    model = mlp()
    method = create_method("aswl_paper", model, total_steps=10, target_sparsity=0.5)
    optimizer = torch.optim.SGD(method.weight_parameters(), lr=0.01)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 100)
    before, attentions = weights(model), method.attentions()
    masks = {name: p.mask.clone() for name, p in method.masks.items()}
    huge = 2.0 ** 100  # the scaled loss, 2^200 times the cross-entropy, overflows fp32

    def loss_fn(outputs: Tensor, targets: Tensor) -> Tensor:
        return torch.nn.functional.cross_entropy(outputs, targets) * huge

    training_step(model, method, optimizer, *batch(), scaler=scaler, loss_fn=loss_fn)
    assert method.step_count == 0
    assert method.attentions() == attentions
    assert all(torch.equal(masks[n], method.masks[n].mask) for n in masks)
    assert all(torch.equal(a, b) for a, b in zip(weights(model), before))
    assert scaler.get_scale() < 2.0 ** 100  # the scaler backed off
    assert all(p.grad is None for p in method.parameters())
    # with a sane scale the next step goes through
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
    training_step(model, method, optimizer, *batch(), scaler=scaler)
    assert method.step_count == 1
    assert method.attentions() != attentions


def test_returns_the_outputs_and_losses_and_accumulation_gives_the_same_step() -> None:
    results, after = {}, {}
    for accumulate in (1, 4):
        model = mlp()
        method = create_method("gmp", model, total_steps=10, target_sparsity=0.5)
        optimizer = torch.optim.SGD(method.weight_parameters(), lr=0.1)
        x, y = batch()
        with torch.no_grad():
            expected = model(x)
        result = training_step(model, method, optimizer, x, y, accumulate=accumulate)
        assert result.stepped and method.step_count == 1
        assert torch.allclose(result.outputs, expected, atol=1e-6)  # the batch's logits
        task = torch.nn.functional.cross_entropy(expected, y)
        assert float(result.task_loss) == pytest.approx(float(task), rel=1e-5)
        results[accumulate], after[accumulate] = result, weights(model)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(after[1], after[4]))
    with pytest.raises(ValueError, match="accumulate"):
        training_step(mlp(), create_method("gmp", mlp(), total_steps=10),
                      torch.optim.SGD(mlp().parameters(), lr=0.1), *batch(), accumulate=0)


def test_the_optimizer_hooks_call_the_same_two_functions(monkeypatch) -> None:
    """aswl.sparsify's hooks and training_step share before_update and after_update."""
    import aswl.integrations as integrations
    import aswl.train.step as step

    calls: list[str] = []
    for name in ("before_update", "after_update"):
        original = getattr(step, name)

        def spy(*args, original=original, name=name, **kwargs):
            calls.append(name)
            return original(*args, **kwargs)

        monkeypatch.setattr(step, name, spy)
        monkeypatch.setattr(integrations, name, spy)
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    method = integrations.sparsify(model, optimizer, total_steps=10, target_sparsity=0.5,
                                   method="gmp")
    x, y = batch()
    torch.nn.functional.cross_entropy(model(x), y).backward()
    optimizer.step()
    assert calls == ["before_update", "after_update"] and method.step_count == 1
    model = mlp()  # the explicit step on an optimiser without hooks
    method = create_method("gmp", model, total_steps=10, target_sparsity=0.5)
    step.training_step(model, method, torch.optim.SGD(model.parameters(), lr=0.1), x, y)
    assert calls[2:] == ["before_update", "after_update"] and method.step_count == 1
