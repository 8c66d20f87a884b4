"""The one training-step order, shared by the trainer, the tests, the benchmarks and the
optimiser hooks of :func:`aswl.sparsify`.

Around the optimiser step a method needs two calls, and both paths make them through the
same two functions:

* :func:`before_update` (after the backward pass, before ``optimizer.step()``):
  ``method.after_backward()``, then clipping of the weight gradients;
* :func:`after_update` (after ``optimizer.step()``): ``method.step(optimizer)`` when the
  optimiser really stepped (a float16 ``GradScaler`` skips a step whose gradients
  overflowed: so does the method), then ``method.zero_grad()``.

:func:`training_step` is the explicit loop's step; the optimiser hooks of
:mod:`aswl.integrations` call :func:`before_update` and :func:`after_update` from
``optimizer.step`` itself. Only the public AMP API is used: a skipped step is one whose
``GradScaler.get_scale()`` went down at ``update()``.

Float16 loss scaling has one rule on both paths: the method steps only on gradients that are
unscaled and finite, and skips every step the scaler skips. :func:`training_step` unscales the
weight optimiser's and the method's own optimisers' gradients (:func:`unscale_gradients`) and
skips the method on an overflow in either. Under the hooks, ``GradScaler.step`` unscales the
weight gradients and, on an overflow, does not call ``optimizer.step``, so neither hook runs;
the method's own gradients come unscaled from ``after_backward`` or the regulariser (which
the pre-hook adds itself). Only own parameters in the forward pass (ASWL with
``scale_output``) would carry the loss scale there, and a skipped step's gradient into the
next: :func:`check_hooked_scaling` refuses them when the hooks are attached.

The clip order is one: ``method.after_backward()`` first (it may add to the weight
gradients: equation 3's decay, RigL's masking), then clipping of the global norm of the weight
gradients (``grad_clip``), then ``optimizer.step()``. With :func:`aswl.sparsify` the hooks run
``after_backward`` inside ``optimizer.step()``, so a ``clip_grad_norm_`` in the user's loop
comes before it; to keep the trainer's order there, clip in a step pre-hook registered after
``sparsify``. Under DistributedDataParallel with ``accumulate > 1``, every micro-batch but
the last runs under ``no_sync()`` (:func:`micro_step_sync`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from aswl.checks import ConfigError

if TYPE_CHECKING:
    from aswl.methods.base import SparseMethod


class StepResult(NamedTuple):
    """What one :func:`training_step` returns (all detached)."""

    loss: Tensor
    """Task loss plus the method's regulariser."""
    task_loss: Tensor
    """The task loss alone (``loss_fn``), averaged over the whole batch."""
    outputs: Tensor
    """The model's outputs (logits) for the batch, e.g. for the training accuracy."""
    stepped: bool
    """False when a float16 scaler skipped the step (its gradients overflowed)."""


def before_update(method: SparseMethod, grad_clip: float | None = None) -> None:
    """After backward, before the optimiser step: the method's gradient work, then clipping
    of the global norm of the weight gradients to ``grad_clip``."""
    method.after_backward()
    if grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(method.weight_parameters(), grad_clip)


def after_update(method: SparseMethod, optimizer: torch.optim.Optimizer | None,
                 stepped: bool = True) -> None:
    """After the optimiser step: the method's step (attentions, masks when due) if the
    optimiser stepped, then its gradients cleared."""
    if stepped:
        method.step(optimizer)
    method.zero_grad()


def loss_scaling(scaler: torch.amp.GradScaler | bool | None) -> bool:
    """Is float16 loss scaling on: an enabled ``GradScaler`` (or True, a framework's own)?"""
    if isinstance(scaler, bool) or scaler is None:
        return bool(scaler)
    return scaler.is_enabled()


def unscale_gradients(scaler: torch.amp.GradScaler,
                      optimizers: list[torch.optim.Optimizer]) -> bool:
    """Unscale these optimisers' gradients (``scaler.unscale_``, once each per step); True
    when all of them are finite, False on an overflow (the method then skips the step)."""
    for each in optimizers:
        scaler.unscale_(each)
    return _finite_gradients(optimizers)


def check_hooked_scaling(method: SparseMethod, scaler: torch.amp.GradScaler | bool | None
                         ) -> None:
    """Refuse optimiser hooks (:func:`aswl.sparsify`) under float16 loss scaling for a
    method whose own parameters are in the forward pass (see the module docstring)."""
    if loss_scaling(scaler) and method.own_gradients_from_forward():
        raise ConfigError(
            f"{method.name} with scale_output puts its attentions in the forward pass, and a "
            "float16 GradScaler unscales only the optimizer it steps: under sparsify's hooks "
            "their gradients would keep the loss scale, and a step the scaler skips would add "
            "its gradient to the next. Use aswl.training_step(..., scaler=scaler), which "
            "unscales the method's own optimizers and skips its step on an overflow, or "
            "amp bf16 (no scaler), or scale_output=false")


def micro_step_sync(model: nn.Module, last: bool) -> contextlib.AbstractContextManager:
    """Under DistributedDataParallel, the micro-batches before the last one of a step
    accumulate their gradients locally (``model.no_sync()``): one all-reduce per step."""
    if not last and isinstance(model, nn.parallel.DistributedDataParallel):
        return model.no_sync()
    return contextlib.nullcontext()


def _default_loss(outputs: Tensor, labels: Tensor) -> Tensor:
    return F.cross_entropy(outputs.float(), labels)


def _finite_gradients(optimizers: list[torch.optim.Optimizer]) -> bool:
    """Are all gradients of these optimisers finite (one reduction, one sync)?"""
    norms = [torch.linalg.vector_norm(p.grad.float()) for opt in optimizers
             for group in opt.param_groups for p in group["params"] if p.grad is not None]
    return not norms or bool(torch.isfinite(torch.stack(norms).sum()))


def training_step(model: nn.Module, method: SparseMethod, optimizer: torch.optim.Optimizer,
                  inputs: Tensor, targets: Tensor, scaler: torch.amp.GradScaler | None = None,
                  grad_clip: float | None = None,
                  loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
                  amp_dtype: torch.dtype | None = None,
                  check_loss: Callable[[Tensor], None] | None = None,
                  accumulate: int = 1) -> StepResult:
    """The one training-step order (trainer, tests, benchmarks); see :class:`StepResult`.

    Forward under autocast in ``amp_dtype`` (None: full precision); ``loss_fn(outputs,
    targets)`` (default cross-entropy in fp32) plus the method's regulariser; ``check_loss``
    sees the loss before backward (the trainer stops on a non-finite one). ``accumulate=k``
    splits the batch into k micro-batches whose gradients add up (each loss weighted by its
    share of the batch) before one optimiser step: the same step with less activation
    memory. The gradients are cleared at the start (the weight optimiser's and the
    method's). With an enabled fp16 ``scaler`` the gradients are unscaled (the method's own
    optimisers too), and a step whose gradients overflowed is skipped by the method as by
    the scaler: no ``after_backward``, no clipping, no ``method.step``. ``grad_clip`` clips
    the global norm of the weight gradients after ``after_backward``.
    """
    if isinstance(accumulate, bool) or not isinstance(accumulate, int) or accumulate < 1:
        raise ValueError(f"accumulate = {accumulate!r}: expected an integer >= 1 (the number "
                         "of micro-batches per optimiser step)")
    loss_fn = loss_fn or _default_loss
    scaling = loss_scaling(scaler)
    optimizer.zero_grad(set_to_none=True)
    method.zero_grad()
    pieces = (list(zip(inputs.chunk(accumulate), targets.chunk(accumulate)))
              if accumulate > 1 else [(inputs, targets)])
    seen: list[Tensor] = []
    task_total: Tensor | None = None
    total_loss: Tensor | None = None
    for index, (x, y) in enumerate(pieces):
        last = index == len(pieces) - 1
        with micro_step_sync(model, last):
            with torch.autocast(x.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
                outputs = model(x)
                task_loss = loss_fn(outputs, y)
            if accumulate > 1:
                task_loss = task_loss * (y.shape[0] / targets.shape[0])
            loss = task_loss
            if last:  # the regulariser once per step
                loss = task_loss + method.regularizer()
                if check_loss is not None:
                    check_loss(loss if task_total is None else loss + task_total)
            (scaler.scale(loss) if scaling else loss).backward()
        seen.append(outputs.detach())
        part = task_loss.detach()
        task_total = part if task_total is None else task_total + part
        total_loss = loss.detach() if total_loss is None else total_loss + loss.detach()
    # attention gradients are scaled too; the scaler skips an overflowed step: so does the method
    finite = not scaling or unscale_gradients(scaler, [optimizer, *method.optimizers()])
    if finite:
        before_update(method, grad_clip)
    stepped = True
    if scaling:
        scale = scaler.get_scale()
        scaler.step(optimizer)
        scaler.update()
        stepped = finite and scaler.get_scale() >= scale
    else:
        optimizer.step()
    after_update(method, optimizer, stepped)
    outputs = seen[0] if len(seen) == 1 else torch.cat(seen)
    assert total_loss is not None and task_total is not None  # at least one micro-batch
    return StepResult(total_loss, task_total, outputs, stepped)
