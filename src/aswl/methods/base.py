"""The shared base of every sparse-training method, and the method registry.

Life cycle (same for the built-in trainer and a user's own loop)::

    method = create_method("aswl", model, total_steps=steps, target_sparsity=0.9)
    optimizer = torch.optim.SGD(method.weight_parameters(), lr=0.1, momentum=0.9)
    for x, y in loader:
        loss = F.cross_entropy(model(x), y) + method.regularizer()
        optimizer.zero_grad(); method.zero_grad()
        loss.backward()
        method.after_backward()
        optimizer.step()
        method.step()                # or all of the above: training_step(model, method, ...)
    method.finalize()
    plain = method.export()          # plain nn.Module, pruned weights are exact zeros

A method overrides only what differs: ``layer_densities`` (how many weights each layer keeps
now), ``scores`` (which ones; default magnitude of the dense weight), and the hooks.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from aswl.sparse import (
    attach_masks,
    build_schedule,
    dense_weight,
    find_prunable,
    keep_count,
    masked_weight,
    remove_masks,
    topk_mask,
)

log = logging.getLogger(__name__)


class ConfigError(ValueError):
    """A configuration value is invalid; the message names the field and the allowed values."""


@dataclass
class MethodConfig:
    """Fields shared by every method."""

    target_sparsity: float = 0.9
    """Fraction of prunable weights that are zero at the end."""
    include: list[str] | None = None
    """Glob patterns of layer names to prune (default: every Conv and Linear layer)."""
    exclude: list[str] = field(default_factory=list)
    """Glob patterns of layer names never pruned."""
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
        check(0.0 <= self.target_sparsity < 1.0, "target_sparsity", self.target_sparsity,
              "a fraction in [0, 1) (every layer keeps at least one weight)")
        check(self.mask_interval >= 1, "mask_interval", self.mask_interval, "an integer >= 1")
        check(self.schedule in ("cubic", "constant"), "schedule", self.schedule,
              "'cubic' or 'constant'")
        check(0.0 <= self.ramp_begin <= self.ramp_end <= 1.0, "ramp_begin/ramp_end",
              (self.ramp_begin, self.ramp_end), "fractions with 0 <= ramp_begin <= ramp_end <= 1")


def check(ok: bool, name: str, value: Any, allowed: str) -> None:
    """Raise a :class:`ConfigError` saying which field is wrong and what it may be."""
    if not ok:
        raise ConfigError(f"method.{name} = {value!r} is invalid: expected {allowed}")


def coerce_value(value: Any, hint: Any, name: str) -> Any:
    """Check ``value`` against a field's type hint, converting int to float where asked."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(hint)
        if value is None and type(None) in options:
            return None
        errors = []
        for option in options:
            if option is type(None):
                continue
            try:
                return coerce_value(value, option, name)
            except ConfigError as err:
                errors.append(err)
        raise errors[0]
    if hint is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if hint is Any:
        return value
    check_type = origin or hint
    if check_type is float and isinstance(value, float):
        return value
    if check_type in (int, str, bool, list, dict):
        if isinstance(value, check_type) and not (check_type is int and isinstance(value, bool)):
            return value
    raise ConfigError(f"{name} = {value!r} has the wrong type: expected "
                      f"{getattr(hint, '__name__', hint)}")


def build_config(config_class: type[MethodConfig], values: dict[str, Any]) -> MethodConfig:
    """Typed config from a dict; unknown keys or values of the wrong type are errors that name
    the field."""
    names = {f.name for f in dataclasses.fields(config_class)}
    unknown = sorted(set(values) - names)
    if unknown:
        raise ConfigError(f"unknown method option(s) {unknown} for {config_class.__name__}; "
                          f"valid: {sorted(names)}")
    hints = typing.get_type_hints(config_class)
    values = {key: coerce_value(value, hints[key], f"method.{key}")
              for key, value in values.items()}
    config = config_class(**values)
    config.validate()
    return config


class SparseMethod:
    """Base of all methods: attach masks, schedule the sparsity, top-k masks, export."""

    name: ClassVar[str] = "base"
    config_class: ClassVar[type[MethodConfig]] = MethodConfig
    straight_through: ClassVar[bool] = True
    """Dense-and-sparse tracking (gradient reaches pruned weights) or plain masked gradient."""
    attention_init: ClassVar[float | None] = None

    def __init__(self, model: nn.Module, config: MethodConfig | None = None,
                 total_steps: int = 1, **overrides: Any) -> None:
        if config is None:
            config = build_config(self.config_class, overrides)
        elif overrides:
            config = build_config(self.config_class, {**dataclasses.asdict(config), **overrides})
        else:
            config.validate()
        self.config = config
        self.model = model
        self.total_steps = max(1, int(total_steps))
        self.step_count = 0
        self.kept: dict[str, int] = {}
        """Weights each layer kept at the last :meth:`update_masks`."""
        self.layers = find_prunable(model, config.include, config.exclude)
        if not self.layers and self.prunes:
            raise ConfigError("no prunable layer found (Conv/Linear) after include/exclude "
                              f"patterns include={config.include} exclude={config.exclude}")
        self.masks = attach_masks(self.layers, self.straight_through, self._attention_init())
        self.numels = {name: dense_weight(m).numel() for name, m in self.layers.items()}
        self.total_numel = sum(self.numels.values())
        self.schedule = build_schedule(config.schedule, config.target_sparsity, self.total_steps,
                                       config.ramp_begin, config.ramp_end)
        self.update_masks()

    # ----------------------------------------------------------------- what methods override
    prunes: ClassVar[bool] = True

    def _attention_init(self) -> float | None:
        return self.attention_init

    def target_sparsity_now(self) -> float:
        """The global sparsity the schedule asks for at the current step."""
        return self.schedule(self.step_count)

    def layer_densities(self) -> dict[str, float]:
        """Fraction of weights each layer keeps now. Default: uniform at the scheduled target."""
        density = 1.0 - self.target_sparsity_now()
        return {name: density for name in self.layers}

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

    def step(self) -> None:
        """Called after ``optimizer.step()``: advance the step, recompute masks when due."""
        self.step_count += 1
        if self.step_count % self.config.mask_interval == 0:
            self.update_masks()

    def optimizers(self) -> list[torch.optim.Optimizer]:
        """The method's own optimisers (the trainer unscales their gradients under fp16)."""
        return []

    def zero_grad(self) -> None:
        for param in self.parameters():
            param.grad = None

    # ----------------------------------------------------------------- shared machinery
    def update_masks(self) -> None:
        """Top-k masks at the current per-layer densities."""
        densities = self.layer_densities()
        with torch.no_grad():
            for name, module in self.layers.items():
                keep = keep_count(self.numels[name], densities[name])
                self.masks[name].mask.copy_(topk_mask(self.scores(name, module), keep))
                self.kept[name] = keep

    def finalize(self) -> None:
        """Jump to the end of the schedule and set the final masks."""
        self.step_count = max(self.step_count, self.total_steps)
        self.update_masks()

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every model parameter except the method's own (for the weight optimiser)."""
        own = {id(p) for p in self.parameters()}
        return [p for p in self.model.parameters() if id(p) not in own]

    def attentions(self) -> dict[str, float]:
        out = {}
        for name, param in self.masks.items():
            if param.attention is not None:
                out[name] = float(param.attention.detach())
        return out

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

    def fold_into_weights(self, model: nn.Module) -> None:
        """Fold anything the method applies on top of ``w * mask`` into ``model`` (a copy)."""

    def export(self) -> nn.Module:
        """A plain copy of the model: masks applied, parametrizations removed, pruned = 0."""
        plain = copy.deepcopy(self.model)
        self.fold_into_weights(plain)
        remove_masks(plain.get_submodule(name) for name in self.layers)
        plain.eval()
        return plain

    def state_dict(self) -> dict[str, Any]:
        """Method state beside ``model.state_dict()`` (which holds masks and attentions)."""
        return {"step": self.step_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.step_count = int(state["step"])


def training_step(model: nn.Module, method: SparseMethod, optimizer: torch.optim.Optimizer,
                  inputs: Tensor, targets: Tensor,
                  loss_fn: Callable[[Tensor, Tensor], Tensor] | None = None) -> Tensor:
    """One step of the life cycle in a user's own loop; returns the (detached) loss.

    ``loss_fn(outputs, targets)`` defaults to cross-entropy; the method's regulariser is added.
    """
    import torch.nn.functional as F

    outputs = model(inputs)
    loss = (loss_fn or F.cross_entropy)(outputs, targets) + method.regularizer()
    optimizer.zero_grad()
    method.zero_grad()
    loss.backward()
    method.after_backward()
    optimizer.step()
    method.step()
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


def create_method(name: str, model: nn.Module, total_steps: int = 1,
                  **options: Any) -> SparseMethod:
    """Attach method ``name`` to ``model`` (in place) with its options; returns the method."""
    return get_method(name)(model, total_steps=total_steps, **options)


def scaled_output_hook(module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
    """Forward hook for ASWL's equation 1: the layer's output times its attention."""
    return output * masked_weight(module).attention


def remove_output_scaling(module: nn.Module) -> None:
    for key, hook in list(module._forward_hooks.items()):
        if hook is scaled_output_hook:
            del module._forward_hooks[key]
