"""The shared base of every sparse-training method, and the method registry.

Life cycle (same for the built-in trainer and a user's own loop)::

    method = create_method("aswl", model, total_steps=steps, target_sparsity=0.9)  # ready
    optimizer = torch.optim.SGD(method.weight_parameters(), lr=0.1, momentum=0.9)
    for x, y in loader:
        training_step(model, method, optimizer, x, y)   # aswl.train.step: the one step order
        optimizer.zero_grad(set_to_none=True)
    method.finalize()
    plain = method.export()          # plain nn.Module, pruned weights are exact zeros

Two phases: the constructor reads the config and the model, finds the layers and builds the
schedule (:meth:`SparseMethod.build_schedule`, which reads the config only); nothing is
attached.
:meth:`SparseMethod.prepare` attaches the masks, lets the method add its own per-layer state
(:meth:`~SparseMethod.on_attach`) and sets the first masks (:meth:`~SparseMethod.init_masks`).
:func:`create_method` does both.

**The contract: what a method overrides** (every other method of the base is machinery)

* *when*: ``build_schedule()`` returns the schedule (:mod:`aswl.sparse.schedules`), which
  alone decides the sparsity at each step (``schedule.sparsity``), the steps with a mask
  update (``schedule.update_due``) and the step from which nothing changes
  (``schedule.done``; the trainer's best-validation selection starts there). Default: the
  gradual schedule of :class:`GradualConfig` (cubic or constant, every ``mask_interval``);
  one-shot (magnitude, SNIP), rounds (IMP), periodic (RigL) and never (dense) are others.
* *which sparsity, where*: ``layer_densities()`` (default: every layer at the scheduled
  sparsity) and ``layer_counts()`` (default: the densities rounded with ``keep_count``), or
  ``global_scope()`` (True: one threshold over all layers' scores instead);
* *which weights*: ``scores(name, module)`` (largest win; default: dense-weight magnitude)
  and ``approximate_masks()`` (True: this update may take each large layer's threshold from
  a fixed sample of its scores, :class:`aswl.sparse.threshold.LayerMasks`; default False).
  :meth:`SparseMethod.update_masks` turns them into masks through the one function
  :meth:`SparseMethod.set_masks`; a method that keeps statistics beside the masks (ASWL)
  or has a faster way to the same masks (the magnitude family's per-layer shrink) extends
  ``update_masks`` and calls the base's otherwise;
* *gradients and state*: ``after_backward()``, ``regularizer()``, ``parameters()``,
  ``optimizers()``, ``decayed_parameters()``, ``on_attach()``, ``state_dict()`` /
  ``_load()`` (the base's ``load_state_dict`` checks the state, then calls ``_load``; it is
  not overridden), ``fold_into_weights(model)``; ``step(optimizer)`` may be extended
  (ASWL's attention step) and must call the base's;
* *granularity*: the mask engine is four methods, ``_check_free``, ``_attach``, ``_detach``
  and ``mask_state``: weight masks here, channel masks in :class:`aswl.methods.channel.
  ChannelMethod`, where the same hooks speak of channel groups (``scores(name, group)``:
  one score per channel; ``global_scope()``; the raw per-group split ``group_densities()``
  before the budget); ``prepare``, ``step``, ``finalize``, the state and ``export`` (with
  its finite check) are this class's for both;
* a method whose masks are not a top-k of scores replaces ``init_masks()`` /
  ``update_masks(optimizer)`` / ``_finalize()`` (SNIP, RigL; the base's ``finalize`` warns
  when untrained, then calls ``_finalize``).

Class attributes (declared capabilities): ``straight_through`` (gradient reaches pruned
weights), ``pin_pruned`` (pruned dense weights are held at exactly zero after every optimiser
step and mask update), ``magnitude_scores`` (the scores are |w|) and ``structure`` (the
granularity ``@register_method`` registered it at). The state, the report and the export
are :class:`aswl.methods.lifecycle.MethodRecord`'s.
A config declares only the fields its method uses: an option the method does not use is a
:class:`ConfigError` naming the method and the option. :func:`aswl.train.step.training_step`
is the one step order (AMP scaler, overflow skip, clipping) used by the trainer, the tests,
the benchmarks and :func:`aswl.sparsify`'s optimiser hooks.
"""

from __future__ import annotations

import dataclasses
import logging
from typing import Any, ClassVar, final

import torch
from torch import Tensor, nn

from aswl.checks import ConfigError, build_config, check, coerce_value, key_list
from aswl.methods.engine import WeightEngine
from aswl.methods.guards import MethodStateError, check_model, warn_user
from aswl.methods.lifecycle import MethodRecord
from aswl.methods.method_config import GradualConfig, MethodConfig
from aswl.methods.registry import (
    METHODS,
    create_method,
    get_method,
    list_methods,
    register_method,
)
from aswl.sparse import (
    dense_weight,
    find_prunable,
    global_topk_masks,
    keep_count,
    split_tied,
)
from aswl.sparse.schedules import Schedule, build_schedule
from aswl.sparse.threshold import LayerMasks

log = logging.getLogger(__name__)

__all__ = ["METHODS", "ConfigError", "GradualConfig", "MethodConfig", "MethodStateError",
           "SparseMethod",
           "build_config", "check", "coerce_value", "create_method", "get_method",
           "list_methods", "register_method", "reset_optimizer_state", "zero_pruned"]


class SparseMethod(WeightEngine, MethodRecord):
    """Base of all methods: masks, schedule, top-k masks, export (see the module docstring)."""

    name: ClassVar[str] = "base"
    structure: ClassVar[str] = "weight"
    """``weight`` or ``channel``: the granularity it is registered at (``@register_method``)."""
    aliases: ClassVar[tuple[str, ...]] = ()
    """Other names it is registered by (a state saved under one of them loads)."""
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    optional_state: ClassVar[tuple[str, ...]] = ()
    """Keys of ``state_dict()`` that checkpoints of older versions may lack."""
    straight_through: ClassVar[bool] = True
    """Dense-and-sparse tracking (gradient reaches pruned weights) or plain masked gradient."""
    pin_pruned: ClassVar[bool] = False
    """Hold pruned dense weights at exactly zero (after every optimiser step and mask update),
    so momentum or Adam state left from before the pruning cannot move them."""
    magnitude_scores: ClassVar[bool] = False
    """:meth:`scores` are the weights' magnitudes (a method may then take a faster way to
    the same top-k masks: the magnitude family's per-layer shrink). A subclass that
    overrides :meth:`scores` with anything else declares False."""

    def __init__(self, model: nn.Module, config: MethodConfig | None = None,
                 total_steps: int | None = None, **overrides: Any) -> None:
        """Phase 1: state only. Nothing is attached to ``model`` until :meth:`prepare`.

        ``total_steps``: optimiser steps of the whole training (epochs * batches per epoch);
        the sparsity schedule is spread over them.
        """
        check_model(model)
        self.check_options(overrides)
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
                warn_user(f"{self.name}: total_steps not given, so the whole sparsity "
                              "schedule happens at the first mask update (one-shot pruning); "
                              "pass total_steps=epochs * len(loader)")
            total_steps = 1
        if isinstance(total_steps, bool) or not isinstance(total_steps, int) or total_steps < 1:
            raise ConfigError(f"total_steps = {total_steps!r} is invalid: expected the number "
                              "of optimiser steps of the whole training, an integer >= 1")
        self.total_steps = total_steps
        self.step_count = 0
        self.nonfinite_steps = 0
        """Steps whose numbers were not finite (counted by :meth:`note_nonfinite`)."""
        self.warned_untrained = False
        """The untrained-method warning was given (once per method)."""
        self.step_hooks: tuple[Any, ...] = ()
        """The optimiser hook handles of :func:`aswl.sparsify` (empty: the loop steps it)."""
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
        self.warn_unreachable()
        self.layer_masks = LayerMasks(self.numels, {name: m.weight.device
                                                    for name, m in self.layers.items()})
        """Scores and counts to masks (exact top-k; a method may replace it with one that
        samples, :class:`~aswl.sparse.threshold.LayerMasks`)."""
        self.schedule = self.build_schedule()

    @classmethod
    def check_options(cls, options: dict[str, Any]) -> None:
        """An option this method's config does not declare: a :class:`ConfigError` naming
        the method and the option (for any caller that holds the options as a dict)."""
        names = {f.name for f in dataclasses.fields(cls.config_class)}
        unused = sorted(set(options) - names, key=str)
        if unused:
            raise ConfigError(f"method {cls.name!r} does not use option(s) "
                              f"{key_list(unused)}; its "
                              f"options are {sorted(names)} (remove the others, or choose "
                              "a method that uses them)")

    def build_schedule(self) -> Schedule:
        """The schedule that decides *when* (see the module docstring). Default: the gradual
        schedule of :class:`GradualConfig`'s fields."""
        cfg = self.config
        if not isinstance(cfg, GradualConfig):
            raise TypeError(f"{type(self).__name__}: a config without the gradual fields "
                            "needs its own build_schedule()")
        return build_schedule(cfg.schedule, cfg.target_sparsity, self.total_steps,
                              cfg.ramp_begin, cfg.ramp_end, cfg.mask_interval)

    def prepare(self) -> SparseMethod:
        """Phase 2: attach the masks (:meth:`_attach`, the engine's), the method's own state,
        then the first masks.

        A model that carries masks already (a second method on the same model) is an error
        before anything is attached; a failure while attaching leaves the model as it was.
        """
        if self.mask_state():
            raise RuntimeError(f"method {self.name!r} is prepared already")
        self._check_free()
        try:
            self._attach()
            self.on_attach()
            self.init_masks()
        except BaseException:
            self._detach()
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

    def sparsity_now(self) -> float:
        """The global sparsity the schedule asks for at the current step (not a hook)."""
        return self.schedule.sparsity(self.step_count)

    def layer_densities(self) -> dict[str, float]:
        """Fraction of weights each layer keeps now. Default: uniform at the scheduled target."""
        density = 1.0 - self.sparsity_now()
        return {name: density for name in self.layers}

    def layer_counts(self) -> dict[str, int]:
        """Weights each layer keeps now. Default: :meth:`layer_densities` rounded."""
        return {name: keep_count(self.numels[name], density)
                for name, density in self.layer_densities().items()}

    def global_scope(self) -> bool:
        """True: one threshold on the scores of all layers at :meth:`sparsity_now`
        (every layer keeps at least one weight) instead of :meth:`layer_counts`."""
        return False

    def approximate_masks(self) -> bool:
        """True: this mask update may read each large layer's threshold off a fixed sample
        of its scores (when :attr:`layer_masks` has samples). Default False: exact top-k."""
        return False

    def scores(self, name: str, module: nn.Module) -> Tensor:
        """Which weights to keep: the largest scores win. Default: dense-weight magnitude."""
        return dense_weight(module).detach().abs()

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

    def own_gradients_from_forward(self) -> bool:
        """Do the method's own :meth:`parameters` take gradients through the model's forward
        pass (so that a float16 ``GradScaler`` scales them with the loss)? Known from
        construction, before :meth:`prepare`. Default False (ASWL: with ``scale_output``)."""
        return False

    # ----------------------------------------------------------------- shared machinery
    def step(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Called after ``optimizer.step()``: advance the step, recompute masks when due."""
        if self.pin_pruned:
            zero_pruned(self)
        self.step_count += 1
        if self.schedule.update_due(self.step_count):
            self.update_masks(optimizer)

    def update_masks(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Top-k of :meth:`scores`, per layer at :meth:`layer_counts` or globally.

        ``optimizer`` (the weight optimiser) is for methods that reset its state of changed
        weights (RigL); the top-k masks do not need it.
        """
        with torch.no_grad():
            scores = {name: self.scores(name, module) for name, module in self.layers.items()}
            if self.global_scope():
                self.set_masks(scores, global_keep=keep_count(self.total_numel,
                                                              1.0 - self.sparsity_now()))
            else:
                self.set_masks(scores, self.layer_counts())
        if self.pin_pruned:
            zero_pruned(self)

    def set_masks(self, scores: dict[str, Tensor], counts: dict[str, int] | None = None,
                  global_keep: int | None = None) -> None:
        """The one function that turns scores into masks: each layer keeps its ``counts``
        largest scores (through :attr:`layer_masks`: exact, or approximate when
        :meth:`approximate_masks`), or, with ``global_keep``, the ``global_keep`` largest
        over all layers (every layer keeps at least one). Records :attr:`kept`."""
        with torch.no_grad():
            if global_keep is not None:
                for name, mask in global_topk_masks(scores, global_keep).items():
                    self.masks[name].mask.copy_(mask)
                    self.kept[name] = int(mask.sum())
                return
            if counts is None:
                raise ValueError("set_masks needs counts or global_keep")
            exact = not self.approximate_masks()
            for name, score in scores.items():
                self.layer_masks.set(name, self.masks[name].mask, score, counts[name], exact)
                self.kept[name] = counts[name]

    @final
    def finalize(self) -> None:
        """Jump to the end of the schedule and set the final masks (:meth:`_finalize`); warns
        when no training step came before it. Not overridden: extend :meth:`_finalize`."""
        self.warn_untrained("finalize() before any step(): the final masks come from the "
                            "untrained weights (one-shot pruning at initialisation). ")
        self._finalize()

    def _finalize(self) -> None:
        """The final masks. Default: the end of the schedule's :meth:`update_masks`."""
        self.step_count = max(self.step_count, self.total_steps)
        self.update_masks()


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
