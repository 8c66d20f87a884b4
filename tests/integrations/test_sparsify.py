"""aswl.sparsify: the optimiser's step hooks do what the four explicit calls do."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

import aswl
from aswl.methods import ConfigError

from .common import assert_same_export, clone, explicit_loop, make_batches, make_net


def hooked_loop(model, batches, method_name, lr=0.05, closure=False, **options):
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9)
    method = aswl.sparsify(model, optimizer, total_steps=len(batches), method=method_name,
                           **options)
    for x, y in batches:
        if closure:
            def step_closure(x=x, y=y):
                optimizer.zero_grad()
                loss = F.cross_entropy(model(x), y)
                loss.backward()
                return loss

            optimizer.step(step_closure)
        else:
            loss = F.cross_entropy(model(x), y)
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
    method.finalize()
    return method


@pytest.mark.parametrize("method_name,options,exact", [
    ("aswl", {"target_sparsity": 0.8}, True),
    ("aswl_paper", {}, False),  # a real regulariser: its gradient is added by the hook
    ("gmp", {"target_sparsity": 0.7}, True),
])
@pytest.mark.parametrize("closure", [False, True], ids=["plain", "closure"])
def test_same_model_as_the_explicit_loop(method_name, options, exact, closure) -> None:
    base, batches = make_net(), make_batches()
    reference = explicit_loop(clone(base), batches, method_name, **options)
    hooked = hooked_loop(clone(base), batches, method_name, closure=closure, **options)
    assert reference.step_count == hooked.step_count
    assert_same_export(reference, hooked, exact=exact)
    if method_name != "aswl_paper":
        assert hooked.global_sparsity() == pytest.approx(options["target_sparsity"], abs=0.01)
    else:  # the regulariser moved the attentions: without its gradient they would not match
        assert reference.attentions() == pytest.approx(hooked.attentions(), abs=1e-6)


def test_regularizer_gradient_is_needed_for_the_paper_variant() -> None:
    """Leaving the regulariser out changes the attentions: the hook's addition is what works."""
    from aswl import integrations

    base, batches = make_net(), make_batches()
    reference = explicit_loop(clone(base), batches, "aswl_paper")
    original = integrations.add_regularizer_gradient
    integrations.add_regularizer_gradient = lambda method, params: None
    try:
        hooked = hooked_loop(clone(base), batches, "aswl_paper")
    finally:
        integrations.add_regularizer_gradient = original
    assert reference.attentions() != pytest.approx(hooked.attentions(), abs=1e-6)


def test_hooks_can_be_removed_and_bad_optimizers_are_refused() -> None:
    model = make_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    method = aswl.sparsify(model, optimizer, total_steps=10, target_sparsity=0.5)
    x, y = make_batches(1)[0]
    F.cross_entropy(model(x), y).backward()
    optimizer.step()
    assert method.step_count == 1
    for handle in method.step_hooks:
        handle.remove()
    optimizer.step()
    assert method.step_count == 1
    # an optimiser that misses the prunable weights: refused before the model is touched
    other = make_net()
    partial = torch.optim.SGD(other.fc2.parameters(), lr=0.1)
    with pytest.raises(ConfigError, match="does not hold the weights"):
        aswl.sparsify(other, partial, total_steps=10)
    assert not hasattr(other.conv, "parametrizations")


def _model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(16, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated")
@pytest.mark.parametrize("model, error, match", [
    (lambda: torch.jit.script(_model()), TypeError, "model is a TorchScript module"),
    (lambda: _model().to("meta"), ValueError, r"model has weights on the meta device \(0\."),
    (lambda: "model.pt", TypeError, r"model must be a torch.nn.Module, got str \(a path\?"),
])
def test_models_that_cannot_be_masked_are_refused_at_attach(model, error, match) -> None:
    from aswl.methods import create_method

    optimizer = torch.optim.SGD(_model().parameters(), lr=0.1)
    with pytest.raises(error, match=match):
        aswl.sparsify(model(), optimizer, total_steps=10)
    with pytest.raises(error, match=match):
        create_method("gmp", model(), total_steps=10)


OVERFLOW_STEP = 5
"""The step whose scaled gradients overflow in the float16 tests."""


def _scaled_loss(model, x, y, step):
    loss = F.cross_entropy(model(x), y)
    return loss * 1e38 if step == OVERFLOW_STEP else loss  # times the scale: beyond fp32


@pytest.mark.parametrize("method_name,options", [
    ("aswl", {"target_sparsity": 0.8}),
    ("aswl_paper", {"scale_output": False}),  # the regulariser's gradient, added by the hook
])
def test_float16_scaling_steps_and_skips_as_training_step_does(method_name, options) -> None:
    """Under a float16 GradScaler the hooks and training_step follow one rule: the method
    steps on unscaled gradients and skips the step whose gradients overflowed."""
    base, batches = make_net(), make_batches()
    methods, models = {}, {}
    for path in ("training_step", "hooks"):
        model = models[path] = clone(base)
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 8)
        if path == "training_step":
            method = aswl.create_method(method_name, model, total_steps=len(batches), **options)
            optimizer = torch.optim.SGD(method.weight_parameters(), lr=0.05, momentum=0.9)
            for step, (x, y) in enumerate(batches):
                aswl.training_step(model, method, optimizer, x, y, scaler=scaler,
                                   loss_fn=lambda out, y, step=step: _scaled_loss(
                                       lambda _: out, None, y, step))
        else:
            optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
            method = aswl.sparsify(model, optimizer, total_steps=len(batches),
                                   method=method_name, scaler=scaler, **options)
            for step, (x, y) in enumerate(batches):
                optimizer.zero_grad()
                scaler.scale(_scaled_loss(model, x, y, step)).backward()
                scaler.step(optimizer)
                scaler.update()
        methods[path] = method
    reference, hooked = methods["training_step"], methods["hooks"]
    assert reference.step_count == hooked.step_count == len(batches) - 1  # one skipped
    assert reference.attentions() == pytest.approx(hooked.attentions(), abs=1e-6)
    for name in reference.layers:
        assert torch.equal(reference.masks[name].mask, hooked.masks[name].mask), name
    for (key, a), b in zip(models["training_step"].state_dict().items(),
                           models["hooks"].state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=key)


def test_float16_scaling_with_attentions_in_the_forward_pass_is_refused_at_attach() -> None:
    """scale_output puts the attentions in the forward pass: the hooks could not unscale
    them, so sparsify refuses with the reason, before anything is attached."""
    model = make_net()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05)
    scaler = torch.amp.GradScaler("cpu")
    with pytest.raises(ConfigError, match="forward pass.*training_step"):
        aswl.sparsify(model, optimizer, total_steps=10, method="aswl_paper", scaler=scaler)
    assert not any(hasattr(m, "parametrizations") for m in model.modules())
    with pytest.raises(ConfigError, match="scale_output"):
        aswl.sparsify(model, optimizer, total_steps=10, target_sparsity=0.5,
                      scale_output=True, scaler=scaler)
    # without loss scaling (a disabled scaler: bf16 or float32) the same method attaches
    method = aswl.sparsify(model, optimizer, total_steps=10, method="aswl_paper",
                           scaler=torch.amp.GradScaler("cpu", enabled=False))
    assert method.own_gradients_from_forward()
