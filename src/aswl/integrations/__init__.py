"""One-line integration: ``aswl.sparsify(model, optimizer, total_steps=..., target_sparsity=...)``.

The method's four calls of the explicit loop (``regularizer``, ``zero_grad``, ``after_backward``,
``step``) are done by two hooks on the user's optimiser
(:meth:`torch.optim.Optimizer.register_step_pre_hook` and ``register_step_post_hook``;
``optimizer.step`` itself is not replaced):

* **before the update** (pre-hook): the gradient of ``method.regularizer()`` is added to the
  parameters' ``.grad``, then :func:`aswl.train.step.before_update` runs (the same function
  :func:`aswl.training_step` calls: ``method.after_backward()``). The regulariser is a function
  of the parameters only (for ASWL's paper variant, of the attentions), never of the batch, so
  adding its gradient after ``loss.backward()`` gives the same gradient as adding the term to
  the loss before it. When ``optimizer.step(closure)`` is given a closure (Lightning's automatic
  optimisation, for one), the closure is wrapped so that this runs after the closure's
  backward pass, once per step.
* **after the update** (post-hook): :func:`aswl.train.step.after_update`, as in
  :func:`aswl.training_step`: ``method.step(optimizer)`` (attention step, masks when due),
  then ``method.zero_grad()`` so the method's gradients start from zero at the next
  backward pass.

A step that the optimiser does not take (a float16 ``GradScaler`` that found an overflow skips
``optimizer.step``) runs neither hook, so the method skips it too; ``GradScaler.step`` has
unscaled the weight gradients before the hooks see them. That is the one float16 rule of
:mod:`aswl.train.step` (:func:`aswl.train.step.check_hooked_scaling`): pass your scaler
(``sparsify(..., scaler=scaler)``) and a method whose own parameters are in the forward pass
(ASWL with ``scale_output=true``, the paper variant's default), whose gradients would keep the
loss scale here, is refused at attach; use :func:`aswl.training_step` with ``scaler=`` for it.
Gradient clipping in your loop happens before ``optimizer.step()``, so ``after_backward`` sees
the clipped gradients (the built-in trainer clips after it).
"""

from __future__ import annotations

import logging
import weakref
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from aswl.methods import ConfigError, SparseMethod, method_for
from aswl.methods.guards import check_model
from aswl.sparse import find_prunable
from aswl.train.step import after_update, before_update, check_hooked_scaling

log = logging.getLogger(__name__)

HOOKED: weakref.WeakKeyDictionary[torch.optim.Optimizer, tuple[Any, ...]] = \
    weakref.WeakKeyDictionary()
"""Each hooked optimiser's hook handles (a second attach on one optimiser is refused)."""


def _optimizer_params(optimizer: torch.optim.Optimizer) -> list[Tensor]:
    return [p for group in optimizer.param_groups for p in group["params"]]


def innermost_optimizer(optimizer: Any) -> torch.optim.Optimizer:
    """The torch optimiser inside wrappers that forward ``step`` to ``.optimizer``
    (accelerate's ``AcceleratedOptimizer``, Lightning's ``LightningOptimizer``)."""
    seen = 0
    while hasattr(optimizer, "optimizer") and seen < 8:
        inner = optimizer.optimizer
        if not isinstance(inner, torch.optim.Optimizer) and not hasattr(inner, "optimizer"):
            break
        optimizer, seen = inner, seen + 1
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ConfigError(f"sparsify needs a torch.optim.Optimizer, got "
                          f"{type(optimizer).__name__}")
    return optimizer


def _check_weights_held(weights: dict[str, Tensor], optimizer: torch.optim.Optimizer) -> None:
    held = {id(p) for p in _optimizer_params(optimizer)}
    missing = [name for name, weight in weights.items() if id(weight) not in held]
    if missing:
        raise ConfigError(
            f"the optimizer does not hold the weights of the prunable layers {missing[:5]}: "
            "pass the optimizer that trains the model (e.g. built from model.parameters())")


def _check_optimizer(method: SparseMethod, optimizer: torch.optim.Optimizer) -> None:
    held = {id(p) for p in _optimizer_params(optimizer)}
    if any(id(p) in held for p in method.parameters()):
        raise ConfigError(
            "the optimizer already holds the method's own parameters (the attentions): create "
            "it before sparsify(), or from method.weight_parameters()")
    _check_weights_held(method.dense_weights(),
                        optimizer)


def add_regularizer_gradient(method: SparseMethod, params: Iterable[Tensor]) -> None:
    """Add d(method.regularizer())/d(param) to ``param.grad`` for the given parameters."""
    term = method.regularizer()
    if not isinstance(term, Tensor) or not term.requires_grad:
        return
    params = [p for p in params if p.requires_grad]
    grads = torch.autograd.grad(term, params, allow_unused=True)
    with torch.no_grad():
        for param, grad in zip(params, grads):
            if grad is None:
                continue
            if param.grad is None:
                param.grad = grad.detach().clone()
            else:
                param.grad.add_(grad)


def _before_update(method: SparseMethod, optimizer: torch.optim.Optimizer) -> None:
    add_regularizer_gradient(method, [*_optimizer_params(optimizer), *method.parameters()])
    before_update(method)


def _pre_hook(method: SparseMethod) -> Callable[..., Any]:
    def hook(optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> Any:
        # ``args`` are step()'s positional arguments, the optimiser itself first
        closure = kwargs.get("closure", args[1] if len(args) > 1 else None)
        if closure is None:
            _before_update(method, optimizer)
            return None
        done = False

        def wrapped() -> Any:
            nonlocal done
            loss = closure()
            if not done:  # once per step, after the first backward pass
                done = True
                _before_update(method, optimizer)
            return loss

        if "closure" in kwargs:
            return args, {**kwargs, "closure": wrapped}
        return (args[0], wrapped, *args[2:]), kwargs

    return hook


def _post_hook(method: SparseMethod) -> Callable[..., None]:
    def hook(optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        after_update(method, optimizer)

    return hook


def attach(method: SparseMethod, optimizer: Any, scaler: Any = None) -> SparseMethod:
    """Hook an existing (prepared) method onto ``optimizer``; returns the method.

    ``scaler``: the loop's ``torch.amp.GradScaler`` if any (see the module docstring). The
    hook handles are in ``method.step_hooks``; ``for h in method.step_hooks: h.remove()``
    detaches them.
    """
    optimizer = innermost_optimizer(optimizer)
    _check_not_hooked(optimizer)
    check_hooked_scaling(method, scaler)
    _check_optimizer(method, optimizer)
    method.step_hooks = (optimizer.register_step_pre_hook(_pre_hook(method)),
                         optimizer.register_step_post_hook(_post_hook(method)))
    HOOKED[optimizer] = method.step_hooks
    return method


def _check_not_hooked(optimizer: torch.optim.Optimizer) -> None:
    """Refuse a second attach on one optimizer: its method would step twice per step."""
    handles = HOOKED.get(optimizer, ())
    if any(h.id in optimizer._optimizer_step_pre_hooks for h in handles[:1]):
        raise ConfigError("this optimizer already carries a sparse method's hooks (attach() or "
                          "sparsify() was called on it before); the schedule would run twice as "
                          "fast. Detach the first with `for h in method.step_hooks: h.remove()`, "
                          "or use a new optimizer")


def sparsify(model: nn.Module, optimizer: Any, total_steps: int | None = None,
             target_sparsity: float | None = None, method: str = "aswl",
             scaler: Any = None, **options: Any) -> SparseMethod:
    """Make ``model`` learn a sparse structure while ``optimizer`` trains it: one line.

    Attaches method ``method`` (default ASWL, target mode) to ``model`` in place and hooks it
    onto ``optimizer``; your loop stays ``loss.backward(); optimizer.step();
    optimizer.zero_grad()``. ``total_steps`` is the number of optimiser steps of the whole
    run (the sparsity ramp is laid out over it; left out, it warns and prunes in one shot).
    ``options`` are the method's config fields (``aswl methods`` lists the methods; e.g.
    ``include=["features.*"]``). After training call
    ``method.finalize()`` and ``method.export()``. The optimiser must already hold the
    model's parameters; it keeps them (the masks wrap the same weight tensors). ``scaler``:
    your float16 ``torch.amp.GradScaler``, if you use one (a method that cannot run under
    it through these hooks is then refused before anything is attached).

    Raises:
        ConfigError: a bad option, or an optimiser that does not hold the model's weights.
    """
    check_model(model)
    if target_sparsity is not None:
        options["target_sparsity"] = target_sparsity
    inner = innermost_optimizer(optimizer)
    _check_not_hooked(inner)  # before the masks are attached
    include, exclude = options.get("include"), options.get("exclude") or ()
    if isinstance(include, (list, tuple, type(None))) and isinstance(exclude, (list, tuple)) \
            and all(isinstance(p, str) for p in [*(include or ()), *exclude]):
        # before the masks are attached: a failed check leaves the model untouched
        layers = find_prunable(model, include, exclude, bool(options.get("prune_embeddings")))
        masked = [name for name, m in layers.items() if parametrize.is_parametrized(m, "weight")]
        if masked:
            raise ConfigError(f"the model is already masked (layers {masked[:5]}): attach one "
                              "method per model; to prune further, use the plain model of "
                              "method.export() or a fresh model")
        _check_weights_held({name: m.weight for name, m in layers.items()}, inner)
    structure = options.pop("structure", None)
    created = method_for(method, structure)(model, total_steps=total_steps, **options)
    check_hooked_scaling(created, scaler)  # before the masks are attached
    return attach(created.prepare(), inner, scaler)
