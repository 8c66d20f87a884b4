"""The shared base of every sparse-training method, and the method registry.

Life cycle (same for the built-in trainer and a user's own loop)::

    method = create_method("aswl", model, total_steps=steps, target_sparsity=0.9)  # ready
    optimizer = torch.optim.SGD(method.weight_parameters(), lr=0.1, momentum=0.9)
    for x, y in loader:
        training_step(model, method, optimizer, x, y)   # the one step order
    method.finalize()
    plain = method.export()          # plain nn.Module, pruned weights are exact zeros

Two phases: the constructor only reads the config and finds the layers (nothing is attached,
no overridable method is called); :meth:`SparseMethod.prepare` attaches the masks, lets the
method add its own per-layer state (:meth:`~SparseMethod.on_attach`) and sets the first masks
(:meth:`~SparseMethod.init_masks`). :func:`create_method` does both.

**The contract: what a method overrides** (every other method of the base is machinery)

* *which sparsity, where*: ``target_sparsity_now()`` (default: the cubic/constant schedule),
  ``layer_densities()`` (default: every layer at that sparsity) or ``global_scope()`` (True:
  one threshold over all layers' scores instead of per-layer densities);
* *which weights*: ``scores(name, module)`` (largest win; default: dense-weight magnitude);
* *when*: ``update_due(step)`` (recompute the masks after optimiser step ``step``; default
  every ``mask_interval`` steps) and ``schedule_done(step)`` (from ``step`` on the schedule no
  longer changes the sparsity; the trainer's best-validation selection starts there);
* *gradients and state*: ``after_backward()``, ``regularizer()``, ``parameters()``,
  ``optimizers()``, ``decayed_parameters()``, ``on_attach()``, ``state_dict()`` /
  ``load_state_dict()``, ``fold_into_weights(model)``;
* a method whose masks are not a top-k of scores replaces ``init_masks()`` /
  ``update_masks(optimizer)`` / ``finalize()`` (SNIP, RigL).

Class attributes: ``straight_through`` (gradient reaches pruned weights) and ``pin_pruned``
(pruned dense weights are held at exactly zero after every optimiser step and mask update).
:func:`training_step` is the one step order (AMP scaler, overflow skip, clipping) used by the
trainer, the tests and the benchmarks.
"""

from __future__ import annotations

import copy
import dataclasses
import functools
import logging
import sys
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.nn.utils import parametrize

from aswl.checks import ConfigError, build_config, check, check_finite, coerce_value
from aswl.finite import check_finite as check_finite_weights
from aswl.sparse import (
    attach_alias,
    attach_layers,
    build_schedule,
    dense_weight,
    describe_dense,
    detach_layers,
    find_prunable,
    global_topk_masks,
    keep_count,
    split_tied,
    strip_layers,
    topk_mask,
)

log = logging.getLogger(__name__)

__all__ = ["ConfigError", "MethodConfig", "MethodStateError", "SparseMethod", "build_config",
           "check", "coerce_value", "create_method", "get_method", "list_methods",
           "register_method", "reset_optimizer_state", "training_step", "zero_pruned"]
@dataclass
class MethodConfig:
    """Fields shared by every method."""

    target_sparsity: float = 0.9
    """Fraction of prunable weights that are zero at the end."""
    include: list[str] | None = None
    """Glob patterns of layer names to prune (default: every Conv and Linear layer)."""
    exclude: list[str] = field(default_factory=list)
    """Glob patterns of layer names never pruned."""
    prune_embeddings: bool = False
    """Prune Embedding layers too (an embedding tied to a pruned output layer always is)."""
    mask_interval: int = 1
    """Recompute masks every this many optimiser steps."""
    schedule: str = "cubic"
    """Sparsity ramp: ``cubic`` (Zhu & Gupta 2017) or ``constant``."""
    ramp_begin: float = 0.0
    """Fraction of training at which the ramp starts."""
    ramp_end: float = 0.75
    """Fraction of training at which the final sparsity is reached."""

    def validate(self) -> None:
        """Raise :class:`ConfigError` naming the first bad field."""
        check_finite(self)
        check(0.0 <= self.target_sparsity < 1.0, "target_sparsity", self.target_sparsity,
              "a fraction in [0, 1) (every layer keeps at least one weight)")
        check(self.mask_interval >= 1, "mask_interval", self.mask_interval, "an integer >= 1")
        check(self.schedule in ("cubic", "constant"), "schedule", self.schedule,
              "'cubic' or 'constant'")
        check(0.0 <= self.ramp_begin <= self.ramp_end <= 1.0, "ramp_begin/ramp_end",
              (self.ramp_begin, self.ramp_end), "fractions with 0 <= ramp_begin <= ramp_end <= 1")


def _warn(message: str) -> None:
    """A UserWarning pointing at the first caller outside aswl (the user's line)."""
    level, frame = 1, sys._getframe(0)
    while frame is not None and frame.f_globals.get("__name__", "").startswith("aswl"):
        frame, level = frame.f_back, level + 1
    warnings.warn(message, UserWarning, stacklevel=level)


class MethodStateError(ValueError):
    """A method state that is not this method's ``state_dict()`` (empty, another method's)."""


def _checked_load(load: Callable[[Any, dict[str, Any]], None]) -> Callable[..., None]:
    """Wrap a ``load_state_dict``: check the state first, name the method in any error."""
    @functools.wraps(load)
    def checked(self: SparseMethod, state: dict[str, Any]) -> None:
        self.check_state(state)
        try:
            load(self, state)
        except MethodStateError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise MethodStateError(f"cannot load this state into method {self.name!r} "
                                   f"({type(err).__name__}: {err}); pass the state_dict() of "
                                   "the same method on the same model") from err

    return checked


def _untrained_hint(method: Any) -> str:
    """How to train: ``aswl.sparsify``'s hooks step the method, an explicit loop must."""
    if getattr(method, "step_hooks", None):
        return ("aswl.sparsify steps the method at every optimizer.step(): train first, then "
                "finalize() and export()")
    return ("Call method.step() after every optimizer.step() (or use aswl.training_step), "
            "then finalize()")


def _warn_untrained(finalize: Callable[[Any], None]) -> Callable[..., None]:
    """Wrap a ``finalize``: warn when no training step came before it."""
    @functools.wraps(finalize)
    def warned(self: SparseMethod) -> None:
        if self.step_count == 0 and not getattr(self, "_warned_untrained", False):
            self._warned_untrained = True
            _warn(f"{self.name}: finalize() before any step(): the final masks come "
                  "from the untrained weights (one-shot pruning at initialisation). "
                  + _untrained_hint(self))
        finalize(self)

    return warned


class SparseMethod:
    """Base of all methods: masks, schedule, top-k masks, export (see the module docstring)."""

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if "load_state_dict" in cls.__dict__:
            cls.load_state_dict = _checked_load(cls.__dict__["load_state_dict"])
        if "finalize" in cls.__dict__:
            cls.finalize = _warn_untrained(cls.__dict__["finalize"])

    name: ClassVar[str] = "base"
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    optional_state: ClassVar[tuple[str, ...]] = ()
    """Keys of ``state_dict()`` that checkpoints of older versions may lack."""
    straight_through: ClassVar[bool] = True
    """Dense-and-sparse tracking (gradient reaches pruned weights) or plain masked gradient."""
    pin_pruned: ClassVar[bool] = False
    """Hold pruned dense weights at exactly zero (after every optimiser step and mask update),
    so momentum or Adam state left from before the pruning cannot move them."""

    def __init__(self, model: nn.Module, config: MethodConfig | None = None,
                 total_steps: int | None = None, **overrides: Any) -> None:
        """Phase 1: state only. Nothing is attached to ``model`` until :meth:`prepare`.

        ``total_steps``: optimiser steps of the whole training (epochs * batches per epoch);
        the sparsity schedule is spread over them.
        """
        if config is None:
            config = build_config(self.config_class, overrides)
        elif overrides:
            config = build_config(self.config_class, {**dataclasses.asdict(config), **overrides})
        else:
            config.validate()
        self.config = config
        self.model = model
        if total_steps is None:
            if config.target_sparsity > 0:
                _warn(f"{self.name}: total_steps not given, so the whole sparsity "
                              "schedule happens at the first mask update (one-shot pruning); "
                              "pass total_steps=epochs * len(loader)")
            total_steps = 1
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ConfigError(f"total_steps = {total_steps!r} is invalid: expected the number "
                              "of optimiser steps of the whole training, an integer >= 1")
        self.total_steps = total_steps
        self.step_count = 0
        self.kept: dict[str, int] = {}
        """Weights each layer kept at the last :meth:`update_masks`."""
        self.layers, self.tied = split_tied(find_prunable(model, config.include, config.exclude,
                                                          config.prune_embeddings))
        """``layers``: one entry per distinct weight; ``tied``: the other layers that share a
        layer's weight Parameter (they share its mask and attention and are counted once)."""
        if not self.layers:
            raise ConfigError("no prunable layer found (Conv/Linear) after include/exclude "
                              f"patterns include={config.include} exclude={config.exclude}")
        self.masks: dict[str, nn.Module] = {}
        """Each layer's :class:`~aswl.sparse.MaskedWeight`, filled by :meth:`prepare`."""
        self.numels = {name: m.weight.numel() for name, m in self.layers.items()}
        self.total_numel = sum(self.numels.values())
        self._warn_unreachable()
        self.schedule = build_schedule(config.schedule, config.target_sparsity, self.total_steps,
                                       config.ramp_begin, config.ramp_end)

    def _warn_unreachable(self) -> None:
        """Every layer keeps at least one weight: say so when that caps the sparsity."""
        target = self.config.target_sparsity
        reachable = 1.0 - len(self.layers) / self.total_numel
        if target > reachable + 1e-9:
            _warn(f"{self.name}: target_sparsity {target:.0%} cannot be reached: every layer "
                  f"keeps at least one weight, so {len(self.layers)} of the {self.total_numel} "
                  f"prunable weights stay and the model ends at most {reachable:.1%} sparse "
                  f"(layers {list(self.layers)[:8]})")

    def prepare(self) -> SparseMethod:
        """Phase 2: attach the masks, the method's own state, then the first masks.

        A layer that carries masks already (a second method on the same model) is an error
        before anything is attached; a failure while attaching leaves the model as it was.
        """
        if self.masks:
            raise RuntimeError(f"method {self.name!r} is prepared already")
        modules = {**self.layers, **{alias: self.model.get_submodule(alias)
                                     for aliases in self.tied.values() for alias in aliases}}
        taken = [name for name, module in modules.items()
                 if parametrize.is_parametrized(module, "weight")]
        if taken:
            raise ConfigError(f"layer(s) {taken} already carry a method's masks: attach one "
                              "method per model (build a fresh model, or use the plain model "
                              "of method.export())")
        describe_dense(self.model, self.layers, self.name)
        try:
            self.masks = attach_layers(self.layers, self.straight_through)
            for name, aliases in self.tied.items():
                for alias in aliases:
                    attach_alias(self.model.get_submodule(alias), self.masks[name])
            self.on_attach()
            self.init_masks()
        except BaseException:
            detach_layers(modules)
            self.masks = {}
            raise
        return self

    def tied_modules(self, name: str) -> list[nn.Module]:
        """The other layers that share layer ``name``'s weight (usually none)."""
        return [self.model.get_submodule(alias) for alias in self.tied.get(name, ())]

    # ----------------------------------------------------------------- what methods override
    def on_attach(self) -> None:
        """After the masks are attached, before the first masks: the method's own per-layer
        state (ASWL: attentions, output hooks, their optimiser)."""

    def init_masks(self) -> None:
        """The masks at step 0. Default: :meth:`update_masks`."""
        self.update_masks()

    def target_sparsity_now(self) -> float:
        """The global sparsity the schedule asks for at the current step."""
        return self.schedule(self.step_count)

    def layer_densities(self) -> dict[str, float]:
        """Fraction of weights each layer keeps now. Default: uniform at the scheduled target."""
        density = 1.0 - self.target_sparsity_now()
        return {name: density for name in self.layers}

    def global_scope(self) -> bool:
        """True: one threshold on the scores of all layers at :meth:`target_sparsity_now`
        (every layer keeps at least one weight) instead of :meth:`layer_densities`."""
        return False

    def scores(self, name: str, module: nn.Module) -> Tensor:
        """Which weights to keep: the largest scores win. Default: dense-weight magnitude."""
        return dense_weight(module).detach().abs()

    def update_due(self, step: int) -> bool:
        """Recompute the masks after optimiser step ``step``? Default: every mask_interval."""
        return step % self.config.mask_interval == 0

    def schedule_done(self, step: int) -> bool:
        """From ``step`` on, the schedule no longer changes the sparsity. Default: the ramp's
        end (``ramp_end`` of training)."""
        return step >= self.config.ramp_end * self.total_steps

    def parameters(self) -> list[nn.Parameter]:
        """The method's own trainable parameters (kept out of the weight optimiser)."""
        return []

    def regularizer(self) -> Tensor | float:
        """Term added to the task loss."""
        return 0.0

    def decayed_parameters(self) -> list[nn.Parameter]:
        """Parameters whose weight decay the regulariser already applies (no optimiser decay)."""
        return []

    def after_backward(self) -> None:
        """Called after ``loss.backward()``, before ``optimizer.step()``."""

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The method's own optimisers (the trainer unscales their gradients under fp16)."""
        return []

    def attentions(self) -> dict[str, float]:
        """Per-layer learned scalars to report (ASWL's attentions); none by default."""
        return {}

    def fold_into_weights(self, model: nn.Module) -> None:
        """Fold anything the method applies on top of ``w * mask`` into ``model`` (a copy)."""

    def state_dict(self) -> dict[str, Any]:
        """Method state beside ``model.state_dict()`` (which holds masks and attentions)."""
        return {"method": self.name, "step": self.step_count}

    @_checked_load
    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step"])

    def check_state(self, state: Any) -> None:
        """Raise :class:`MethodStateError` unless ``state`` is a ``state_dict()`` of this
        method (its name and every key)."""
        if not isinstance(state, dict):
            raise MethodStateError(f"method state must be the dict of {self.name}.state_dict(), "
                                   f"not a {type(state).__name__}")
        owner = state.get("method")
        if owner is not None and owner != self.name:
            raise MethodStateError(f"this is the state of method {owner!r}; it cannot be loaded "
                                   f"into {self.name!r}: build the same method, then load")
        missing = sorted(set(self.state_dict()) - set(state) - {"method"}
                         - set(self.optional_state))
        if missing:
            raise MethodStateError(f"method state lacks {missing}: it is not a "
                                   f"{self.name}.state_dict() (an empty or another method's "
                                   "state?)")

    # ----------------------------------------------------------------- shared machinery
    def step(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Called after ``optimizer.step()``: advance the step, recompute masks when due."""
        if self.pin_pruned:
            zero_pruned(self)
        self.step_count += 1
        if self.update_due(self.step_count):
            self.update_masks(optimizer)

    def update_masks(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Top-k of :meth:`scores`, per layer at :meth:`layer_densities` or globally.

        ``optimizer`` (the weight optimiser) is for methods that reset its state of changed
        weights (RigL); the top-k masks do not need it.
        """
        with torch.no_grad():
            scores = {name: self.scores(name, module) for name, module in self.layers.items()}
            if self.global_scope():
                keep = keep_count(self.total_numel, 1.0 - self.target_sparsity_now())
                for name, mask in global_topk_masks(scores, keep).items():
                    self.masks[name].mask.copy_(mask)
                    self.kept[name] = int(mask.sum())
            else:
                densities = self.layer_densities()
                for name, score in scores.items():
                    keep = keep_count(self.numels[name], densities[name])
                    self.masks[name].mask.copy_(topk_mask(score, keep))
                    self.kept[name] = keep
        if self.pin_pruned:
            zero_pruned(self)

    @_warn_untrained
    def finalize(self) -> None:
        """Jump to the end of the schedule and set the final masks."""
        self.step_count = max(self.step_count, self.total_steps)
        self.update_masks()

    def zero_grad(self) -> None:
        for param in self.parameters():
            param.grad = None

    def export_metadata(self) -> dict[str, str]:
        """Metadata the exported model's files carry (a slimmed model's channel record)."""
        return {}

    def dense_weights(self) -> dict[str, nn.Parameter]:
        """Each prunable layer's trained (dense) weight Parameter, by layer name."""
        return {name: dense_weight(module) for name, module in self.layers.items()}

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every model parameter except the method's own (for the weight optimiser)."""
        own = {id(p) for p in self.parameters()}
        return [p for p in self.model.parameters() if id(p) not in own]

    def global_sparsity(self) -> float:
        """Fraction of prunable weights masked out now."""
        if not self.total_numel:
            return 0.0
        kept = sum(int(p.mask.sum()) for p in self.masks.values())
        return 1.0 - kept / self.total_numel

    def layer_report(self) -> list[dict[str, Any]]:
        rows = []
        attentions = self.attentions()
        for name in self.layers:
            nonzero = int(self.masks[name].mask.sum())
            numel = self.numels[name]
            rows.append({"name": name, "numel": numel, "nonzero": nonzero,
                         "sparsity": 1.0 - nonzero / numel, "attention": attentions.get(name)})
        return rows

    def export(self) -> nn.Module:
        """A plain copy of the model: masks applied, parametrizations removed, pruned = 0.
        Layers that shared one weight share one (masked) weight in the copy too. A model with
        NaN or infinite weights is refused (:class:`aswl.finite.NonFiniteError`, naming them)."""
        if self.step_count == 0 and not getattr(self, "_warned_untrained", False):
            self._warned_untrained = True
            _warn(f"{self.name}: export() before any step(): the model is untrained "
                  "(its masks come from the initial weights). " + _untrained_hint(self))
        plain = copy.deepcopy(self.model)
        self.fold_into_weights(plain)
        names = [*self.layers, *(alias for aliases in self.tied.values() for alias in aliases)]
        strip_layers(plain, names)
        plain.eval()
        skipped = getattr(self, "nonfinite_steps", 0)
        check_finite_weights(plain.state_dict(), f"{self.name}: the exported model",
                             f" ({skipped} step(s) met non-finite numbers)" if skipped else "")
        return plain


def zero_pruned(method: SparseMethod) -> None:
    """Set the dense weights under every mask's zeros to exactly zero."""
    for name, module in method.layers.items():
        method.masks[name].zero_pruned(dense_weight(module))


def reset_optimizer_state(optimizer: torch.optim.Optimizer, param: Tensor,
                          where: Tensor) -> None:
    """Zero the optimiser's per-weight state (momentum, Adam moments) of ``param`` at
    ``where`` (a boolean tensor of the parameter's shape): the weights start afresh."""
    for value in optimizer.state.get(param, {}).values():
        if isinstance(value, Tensor) and value.shape == param.shape:
            value.masked_fill_(where, 0)


def training_step(model: nn.Module, method: SparseMethod, optimizer: torch.optim.Optimizer,
                  inputs: Tensor, targets: Tensor, scaler: torch.amp.GradScaler | None = None,
                  grad_clip: float | None = None,
                  loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
                  amp_dtype: torch.dtype | None = None,
                  check_loss: Callable[[Tensor], None] | None = None) -> Tensor:
    """The one training-step order (trainer, tests, benchmarks); returns the detached loss.

    Forward under autocast in ``amp_dtype`` (None: full precision); ``loss_fn(outputs,
    targets)`` (default cross-entropy in fp32) plus the method's regulariser; ``check_loss``
    sees the loss before backward (the trainer stops on a non-finite one). With an enabled
    fp16 ``scaler`` the gradients are unscaled (the method's own optimisers too), and a step
    whose gradients overflowed is skipped by the method as by the scaler: no
    ``after_backward``, no clipping, no ``method.step``. ``grad_clip`` clips the global norm of
    the weight gradients after ``after_backward``.
    """
    import torch.nn.functional as F

    if loss_fn is None:
        def loss_fn(outputs: Tensor, labels: Tensor) -> Tensor:
            return F.cross_entropy(outputs.float(), labels)

    with torch.autocast(inputs.device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
        outputs = model(inputs)
        task_loss = loss_fn(outputs, targets)
    loss = task_loss + method.regularizer()
    if check_loss is not None:
        check_loss(loss)
    optimizer.zero_grad(set_to_none=True)
    method.zero_grad()
    scaling = scaler is not None and scaler.is_enabled()
    overflow = False
    if scaling:
        scaler.scale(loss).backward()
        found = 0.0
        for own in [optimizer, *method.optimizers()]:  # attention gradients are scaled too
            scaler.unscale_(own)
            found += sum(float(v) for v in scaler._found_inf_per_device(own).values())
        overflow = found > 0
    else:
        loss.backward()
    if not overflow:  # the scaler skips this step: so does the method
        method.after_backward()
        if grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(method.weight_parameters(), grad_clip)
    if scaling:
        scaler.step(optimizer)
        scaler.update()
    else:
        optimizer.step()
    if overflow:
        method.zero_grad()
    else:
        method.step(optimizer)
    return loss.detach()


METHODS: dict[str, type[SparseMethod]] = {}


def register_method(name: str) -> Callable[[type[SparseMethod]], type[SparseMethod]]:
    """Class decorator: make a method available by ``name``."""

    def wrap(cls: type[SparseMethod]) -> type[SparseMethod]:
        if name in METHODS:
            raise ValueError(f"method {name!r} registered twice")
        cls.name = name
        METHODS[name] = cls
        return cls

    return wrap


def list_methods() -> list[str]:
    return sorted(METHODS)


def get_method(name: str) -> type[SparseMethod]:
    if name not in METHODS:
        raise ConfigError(f"unknown method {name!r}; available: {', '.join(list_methods())}")
    return METHODS[name]


STRUCTURES = ("weight", "channel")
CHANNEL_VARIANTS: dict[str, str] = {}
"""Method name -> the registered name of its channel-granularity class (filled by
:mod:`aswl.methods.channel` and :mod:`aswl.methods.channel_aswl`)."""


def method_for(name: str, structure: str = "weight") -> type[SparseMethod]:
    """The class of method ``name`` at granularity ``structure`` (``weight``: single weights,
    ``channel``: whole channels, so the export is a thinner dense model)."""
    if structure not in STRUCTURES:
        raise ConfigError(f"structure = {structure!r} is invalid: expected 'weight' or 'channel'")
    if structure == "channel":
        if name not in CHANNEL_VARIANTS:
            raise ConfigError(f"method {name!r} has no channel mode; with structure = 'channel' "
                              f"use one of {sorted(set(CHANNEL_VARIANTS))}")
        return get_method(CHANNEL_VARIANTS[name])
    if name in CHANNEL_VARIANTS and CHANNEL_VARIANTS[name] == name:
        raise ConfigError(f"method {name!r} prunes whole channels: set structure = 'channel' "
                          "(it has no weight-level mode)")
    return get_method(name)


def create_method(name: str, model: nn.Module, total_steps: int | None = None,
                  structure: str = "weight", **options: Any) -> SparseMethod:
    """Method ``name`` with its options, prepared on ``model`` (in place): ready to train.

    ``structure='channel'`` removes whole channels (needs ``example_inputs``: a batch the
    model accepts, on which its coupled channels are traced)."""
    return method_for(name, structure)(model, total_steps=total_steps, **options).prepare()
