"""ASWL: attention-based simultaneous sparse structure and weight learning.

He, Shi & Dong, "Learning Pruned Structure and Weights Simultaneously from Scratch: an
Attention based Approach", arXiv 2111.02399 (2021). Each prunable layer l has a learned scalar
attention a_l in [0.01, 1] (down to 1e-4 with ``attention_space='log'``) that

1. scales the layer's output, f(x) = a_l * f_l(x; w_l * m_l)           (``scale_output``)
2. sets its pruning ratio, p_l = min((1 - a_l)^alpha, 0.99)
3. is regularised, gamma * (S(A) - r)^2 with S the global kept fraction (paper variant).

Dense and sparse weights are both tracked (straight-through), masks are recomputed from the
dense magnitudes. Two variants, both with per-layer ratios from the attentions:

* ``paper``: the equations as published. Gradient to a_l from eq. 1 and the regulariser.
* ``target`` (default): the user asks for a global sparsity; a cubic ramp sets the budget;
  raw densities 1 - p_l, times each layer's LAMP density at that budget (``prior='lamp'``),
  are projected onto the budget by one shared scale, so the final model has exactly the
  target, and the attentions learn the split (a correction to LAMP's) from a loss-aware
  estimate of each layer's marginal loss (see :meth:`ASWL.after_backward`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from aswl.finite import warn_once
from aswl.methods.base import (
    ConfigError,
    MethodConfig,
    SparseMethod,
    check,
    register_method,
)
from aswl.methods.lamp import lamp_densities
from aswl.sparse import TensorSlot, dense_weight, keep_count, masked_weight, topk_mask
from aswl.sparse.allocation import erk_densities

log = logging.getLogger(__name__)

ATTENTION_MIN = 0.01
LOG_ATTENTION_MIN = 1e-4
"""Lowest attention with ``attention_space='log'`` (multiplicative steps reach it gradually)."""
ESTIMATOR_SAMPLE = 4096
"""Weights per layer (a fixed random sample) the loss-aware estimator looks at."""
MASK_SAMPLE = 16384
"""Weights per layer (a fixed random sample) whose order statistic sets a sampled mask."""
ATTENTION_UPDATES = 512
"""Attention updates over the ramp when ``attention_interval`` is None."""
PRIOR_INTERVAL_MAX = 32
"""``prior='lamp'`` is refreshed with the estimator's bands, and at least this often."""
MIN_SAMPLED_KEPT = 64
"""Fewer kept weights than this in a layer's sample: its mask is exact (a sampled threshold
would be too coarse)."""


@dataclass
class ASWLConfig(MethodConfig):
    mask_interval: int = 1
    """Masks are recomputed every this many steps. Between the start and the end of the ramp
    the kept count comes from a threshold read off a fixed sample of each layer's magnitudes
    (``exact_masks=false``), which costs about as much as applying the mask once."""
    attention_interval: int | None = None
    """Target variant: the attentions take one optimiser step every this many steps, from the
    estimator's statistic accumulated over the steps in between. None: about 512 steps over
    the ramp (a multiple of mask_interval), so a short run learns its split as fully as a
    long one."""
    variant: str = "target"
    """``target`` (reaches target_sparsity exactly, learned split) or ``paper`` (equations 1-3)."""
    alpha: float = 1.0
    """Pruning factor: p = (1 - a)^alpha."""
    gamma: float = 1.0
    """Attention decay: weight of the sparsity regulariser (paper variant)."""
    density_target: float = 0.0
    """r in phi = (S - r)^2: the global kept fraction the regulariser pulls towards (paper)."""
    init_attention: float = 0.5
    """Starting attention (with ``prior='erk'``: the attention of the densest layer)."""
    prior: str | None = None
    """The split the attentions start from or correct. None: ``lamp`` in the target variant,
    ``uniform`` in the paper variant. ``uniform`` (every attention at
    init_attention), ``erk`` (attentions start proportional to the Erdos-Renyi-kernel
    densities of Evci et al. 2020) or ``lamp`` (target variant: each layer's raw density is
    its attention times its LAMP density at the current budget, recomputed from the dense
    weights every ``attention_interval`` steps (at most 32) and at exact mask updates, so
    equal attentions give LAMP's split (Lee et al. 2021; estimated from a sample of at most
    4,096 weights per layer) and the attentions learn a correction to it)."""
    attention_optimizer: str = "adam"
    """``sgd`` (momentum 0.9, as the authors), ``adam``, or ``adam_shared``: Adam with one
    second moment for all the attentions (the running mean square of their gradients), so
    each step is proportional to the attentions' momentum-averaged gradients, with one
    adaptive scale for all (an ablation)."""
    attention_lr: float = 0.01
    """Learning rate of the attentions' own optimiser."""
    attention_space: str = "linear"
    """``linear``: the optimiser steps the attention a itself, within [0.01, 1]. ``log``
    (target variant with alpha = 1 and no output scaling, where the raw density is a): it
    steps log a, so every step changes a layer's raw density by a factor; after each step
    the attentions are divided by the largest one when it exceeds 1, which changes no
    density (the budget projection rescales the raw densities anyway), so a layer that
    wants more than every other layer keeps growing relative to them instead of stopping at
    a = 1, and the attentions may go down to 1e-4."""
    attention_momentum: float = 0.9
    """Momentum of the attentions' SGD (attention_optimizer = sgd)."""
    estimator: str = "auto"
    """``paper`` (gradient from eq. 1 and phi only), ``loss_aware`` (adds the straight-through
    marginal-loss estimate), ``auto`` (paper for the paper variant, loss_aware for target)."""
    saliency: str = "first_order"
    """What the loss-aware estimator averages over the weights near each layer's threshold:
    ``first_order`` (g * w, the loss change of restoring or removing the weight),
    ``second_order`` (0.5 * (g * w)^2, an optimal-brain-damage saliency with the squared
    gradient as the curvature) or ``restore`` (g * w over the band's weights below the
    layer's threshold only: the first-order loss change of restoring the pruned weights
    nearest it; an ablation. Below the threshold also counts the weights that
    ``keep_every_unit`` keeps in a unit with nothing above it)."""
    accumulate: bool = True
    """Accumulate the estimator's statistic on every mask-update step between attention updates
    (False: only on the attention-update step itself)."""
    scale_output: bool | None = None
    """Equation 1. None: on for the paper variant, off for target (keeps the output scale)."""
    weight_decay: float | None = None
    """Equation 3's lambda: a number adds lambda * sum(w_hat^2) on the *sparse* weights of the
    pruned layers (gradient 2 lambda w_hat; 2.5e-4 matches an optimiser weight decay of 5e-4),
    as published. None (target default): the optimiser's weight decay acts on the dense
    weights, pruned ones included."""
    max_ratio: float | None = None
    """Cap on every layer's pruning ratio. None: 0.99 for the paper variant (the authors'
    cap), no cap for target, where ``min_kept`` protects small layers instead."""
    min_kept: int | None = None
    """Fewest weights any layer keeps. None: its number of output units (rows of the weight)
    in the target variant, 1 in the paper variant."""
    band: float = 0.05
    """Fraction of a layer's weights around its threshold used by the loss-aware estimator."""
    count_interval: int = 4
    """During the ramp (``exact_masks=false``), each layer's kept count and threshold are
    recomputed every this many steps; the mask updates in between re-threshold the moved
    weights at the layer's last threshold (one comparison per weight)."""
    exact_masks: bool = False
    """True: exact top-k masks at every update. False: during the ramp, a threshold from a
    fixed sample of each large layer (cheap; the count is approximate); exact from the end of
    the ramp on and at ``finalize``."""
    freeze_after_ramp: bool = True
    """Target variant: when the ramp ends, set exact masks at the target, then keep masks and
    attentions fixed, so the rest of training fine-tunes exactly the model that is exported."""
    keep_every_unit: bool | None = None
    """Every output unit (row of the weight: a neuron, or a conv's output channel) keeps at
    least its largest weight. A unit with none left feeds a BatchNorm an all-zero channel,
    whose normalisation divides by sqrt(eps): the straight-through gradient to its pruned
    weights is then hundreds of times too large, the weights jump and the masks churn.
    Such a layer's minimum count (``min_kept``) is at least its number of rows.
    None: in the target variant, for the layers whose next module is a BatchNorm over their
    outputs (elsewhere a dead unit is harmless, and forcing one weight into every unit costs
    accuracy at high sparsity); never in the paper variant. True or False: every layer or
    none."""

    soft_floor: bool = True
    """Target variant: a layer held at its lowest kept fraction (``min_kept``) still gets the
    attention gradient it would get if it were free, and its attention is kept at the value
    where the floor begins (not with ``scale_output``, where that would rescale the layer's
    output). Off: such a layer's attention gets no gradient and may sink far below that value,
    so a layer that reached its floor early can never grow again."""

    def validate(self) -> None:
        super().validate()
        check(self.variant in ("target", "paper"), "variant", self.variant, "'target' or 'paper'")
        check(math.isfinite(self.alpha) and self.alpha > 0, "alpha", self.alpha,
              "a finite number > 0")
        check(self.gamma >= 0, "gamma", self.gamma, "a number >= 0")
        check(0.0 <= self.density_target <= 1.0, "density_target", self.density_target,
              "a fraction in [0, 1]")
        check(ATTENTION_MIN <= self.init_attention <= 1.0, "init_attention",
              self.init_attention, "a number in [0.01, 1]")
        check(self.prior in (None, "uniform", "erk", "lamp"), "prior", self.prior,
              "null, 'uniform', 'erk' or 'lamp'")
        if self.prior == "lamp":
            check(self.variant == "target", "prior", self.prior,
                  "'uniform' or 'erk': 'lamp' needs variant = target (a budget to split)")
        check(self.attention_space in ("linear", "log"), "attention_space",
              self.attention_space, "'linear' or 'log'")
        if self.attention_space == "log":  # the rescale is density-neutral only there
            check(self.variant == "target", "attention_space", self.attention_space,
                  "'linear': 'log' needs variant = target")
            check(self.alpha == 1.0, "attention_space", self.attention_space,
                  "'linear': 'log' needs alpha = 1 (raw density = a)")
            check(self.scale_output is not True, "attention_space", self.attention_space,
                  "'linear': 'log' needs scale_output off (rescaling the attentions would "
                  "rescale the outputs)")
        check(self.attention_optimizer in ("sgd", "adam", "adam_shared"),
              "attention_optimizer", self.attention_optimizer,
              "'sgd', 'adam' or 'adam_shared'")
        check(math.isfinite(self.attention_lr) and self.attention_lr >= 0, "attention_lr",
              self.attention_lr, "a finite number >= 0")
        check(self.attention_interval is None or self.attention_interval >= 1,
              "attention_interval", self.attention_interval, "null or an integer >= 1")
        check(self.estimator in ("auto", "paper", "loss_aware"), "estimator", self.estimator,
              "'auto', 'paper' or 'loss_aware'")
        check(self.count_interval >= 1, "count_interval", self.count_interval,
              "an integer >= 1")
        check(self.saliency in ("first_order", "second_order", "restore"), "saliency",
              self.saliency, "'first_order', 'second_order' or 'restore'")
        check(self.weight_decay is None or self.weight_decay >= 0, "weight_decay",
              self.weight_decay, "null or a number >= 0")
        check(self.max_ratio is None or 0.0 < self.max_ratio <= 1.0, "max_ratio",
              self.max_ratio, "null or a number in (0, 1]")
        check(self.min_kept is None or self.min_kept >= 1, "min_kept", self.min_kept,
              "null or an integer >= 1")
        check(0.0 < self.band <= 0.5, "band", self.band, "a fraction in (0, 0.5]")
        if self.variant == "target":
            check(self.target_sparsity <= self.ratio_cap, "target_sparsity",
                  self.target_sparsity, f"at most max_ratio = {self.ratio_cap}")

    @property
    def prior_in_force(self) -> str:
        """``prior``, or its variant default."""
        if self.prior is not None:
            return self.prior
        return "lamp" if self.variant == "target" else "uniform"

    @property
    def ratio_cap(self) -> float:
        """The cap in force: ``max_ratio``, or its variant default."""
        if self.max_ratio is not None:
            return self.max_ratio
        return 0.99 if self.variant == "paper" else 1.0


@register_method("aswl")
class ASWL(SparseMethod):
    """ASWL (He, Shi & Dong 2021, arXiv 2111.02399); see the module docstring."""

    config_class = ASWLConfig
    config: ASWLConfig
    optional_state = ("prior",)  # saved since the LAMP prior; recomputed when absent

    def __init__(self, model: nn.Module, config: ASWLConfig | None = None,
                 total_steps: int | None = None, **overrides: Any) -> None:
        super().__init__(model, config, total_steps, **overrides)
        cfg = self.config
        self._bands: dict[str, tuple[Tensor, Tensor]] = {}
        self._thresholds: dict[str, Tensor] = {}
        """Each layer's magnitude threshold at its last kept-count update."""
        self.frozen = False
        self.unit_layers = self._unit_layers()
        """The layers whose every output unit keeps a weight (``keep_every_unit``)."""
        self._unit_index: dict[str, Tensor] = {}
        self._magnitudes: dict[str, Tensor] = {}
        self.paper_estimator = cfg.estimator == "paper" or (
            cfg.estimator == "auto" and cfg.variant == "paper")
        self.scales_output = (cfg.variant == "paper") if cfg.scale_output is None \
            else cfg.scale_output
        if cfg.variant == "target" and self.paper_estimator and not self.scales_output:
            raise ConfigError("method.estimator = 'paper' in the target variant needs "
                              "method.scale_output = true (equation 1 is then the attentions' "
                              "only gradient); or use estimator = 'loss_aware'")
        self.log_space = cfg.attention_space == "log"
        lowest = LOG_ATTENTION_MIN if self.log_space else ATTENTION_MIN
        self.attention_floor = max(lowest, 1.0 - cfg.ratio_cap ** (1.0 / cfg.alpha))
        """Lowest attention: below it p is capped anyway (the gradient through the cap is 0),
        or the fixed lower end of the range (0.01; 1e-4 with ``attention_space='log'``)."""
        self._numel = torch.tensor([float(self.numels[n]) for n in self.layers])
        self.attention_interval = cfg.attention_interval or self._auto_attention_interval()
        self.min_counts = self._min_counts()
        self._check_budget()
        self._floor = [max(1.0 - cfg.ratio_cap, self.min_counts[n] / self.numels[n])
                       for n in self.layers]
        """Each layer's lowest kept fraction (the cap, or its minimum count)."""
        self._samples = self._sample_indices(ESTIMATOR_SAMPLE)
        self._mask_index = self._sample_indices(MASK_SAMPLE)
        self._stat_sum = torch.zeros(len(self.layers))
        self._stat_count = torch.zeros(len(self.layers))
        self._prior = torch.ones(len(self.layers), dtype=torch.float64)
        """Per-layer factor on the raw densities (``prior='lamp'``: LAMP's densities)."""
        self._prior_ready = False
        self._prior_interval = min(self.attention_interval, PRIOR_INTERVAL_MAX)
        """The prior is refreshed every this many steps (and at every exact mask update)."""

    def on_attach(self) -> None:
        """One attention per layer (on its mask parametrization, so it is in the model's
        state_dict), the output hook of equation 1, the prior and the attentions' optimiser."""
        cfg = self.config
        for name, module in self.layers.items():
            attach_attention(self.masks[name], cfg.init_attention)
            if self.scales_output:  # layers that share this weight share its attention
                if isinstance(module, TensorSlot):
                    raise ConfigError(f"scale_output cannot scale {name} (a tensor inside "
                                      f"{type(module.owner).__name__}, not a layer's output): "
                                      f"exclude it or set scale_output=false")
                for each in (module, *self.tied_modules(name)):
                    each.register_forward_hook(scaled_output_hook)
            elif cfg.variant == "target":
                # Not used in the forward pass: its gradient comes from the estimator only
                # (and DDP must not wait for a gradient that autograd never produces).
                self.masks[name].attention.requires_grad_(False)
        if cfg.prior_in_force == "erk":
            self._init_from_erk()
        params = self.parameters()
        if cfg.attention_optimizer == "sgd":
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(
                params, lr=cfg.attention_lr, momentum=cfg.attention_momentum)
        elif cfg.attention_optimizer == "adam_shared":
            self.optimizer = SharedAdam(params, lr=cfg.attention_lr)
        else:
            self.optimizer = torch.optim.Adam(params, lr=cfg.attention_lr)

    def attentions(self) -> dict[str, float]:
        return {name: float(self.masks[name].attention.detach()) for name in self.layers}

    def _auto_attention_interval(self) -> int:
        """About ATTENTION_UPDATES attention steps over the ramp, on mask-update steps only
        (an attention change between two mask updates would not be seen by the masks)."""
        ramp = getattr(self.schedule, "end_step", 0) - getattr(self.schedule, "begin_step", 0)
        every = self.config.mask_interval
        return every * max(1, round(ramp / ATTENTION_UPDATES / every))

    def _min_counts(self) -> dict[str, int]:
        cfg = self.config
        counts = {}
        for name, module in self.layers.items():
            if cfg.min_kept is not None:
                wanted = cfg.min_kept
            elif cfg.variant == "target":
                wanted = int(module.weight.shape[0])  # one weight per output unit
            else:
                wanted = 1
            if name in self.unit_layers:  # keep_every_unit: at least one weight per row
                wanted = max(wanted, int(module.weight.shape[0]))
            counts[name] = max(1, min(self.numels[name], wanted))
        return counts

    def _check_budget(self) -> None:
        cfg = self.config
        if cfg.variant != "target" or not self.total_numel:
            return
        budget = (1.0 - cfg.target_sparsity) * self.total_numel
        needed = sum(self.min_counts.values())
        if needed > budget + 0.5:
            raise ConfigError(
                f"method.target_sparsity = {cfg.target_sparsity} leaves {budget:.0f} weights, "
                f"but the layers' minimum counts (method.min_kept) add up to {needed}: lower "
                f"target_sparsity to at most {1.0 - needed / self.total_numel:.5f} or set "
                f"method.min_kept to a smaller number")

    def _init_from_erk(self) -> None:
        """Attentions whose raw densities follow the ERK split (Evci et al. 2020) at the
        target, scaled so that the densest layer starts at ``init_attention``."""
        shapes = {name: tuple(m.weight.shape) for name, m in self.layers.items()}
        erk = erk_densities(shapes, 1.0 - self.config.target_sparsity)
        top = max(erk.values())
        start = 1.0 - (1.0 - self.config.init_attention) ** self.config.alpha
        with torch.no_grad():
            for name, value in erk.items():
                density = value / top * start
                attention = 1.0 - (1.0 - density) ** (1.0 / self.config.alpha)
                self.masks[name].attention.fill_(min(1.0, max(self.attention_floor, attention)))

    def parameters(self) -> list[nn.Parameter]:
        return [self.masks[name].attention for name in self.layers]

    def optimizers(self) -> list[torch.optim.Optimizer]:
        return [self.optimizer]

    def decayed_parameters(self) -> list[nn.Parameter]:
        if self.config.weight_decay is None:
            return []
        return [dense_weight(module) for module in self.layers.values()]

    # ------------------------------------------------------------------ attention -> ratio
    def _attention_vector(self) -> Tensor:
        return torch.stack([self.masks[name].attention for name in self.layers]).float()

    def pruning_ratios(self, attention: Tensor) -> Tensor:
        """Equation 2: p = min((1 - a)^alpha, cap), differentiable in a."""
        base = 1.0 - attention
        ratio = torch.where(base > 0, base.clamp_min(1e-12) ** self.config.alpha,
                            torch.zeros_like(base))  # a = 1 prunes nothing, for every alpha
        return ratio.clamp_max(self.config.ratio_cap)

    def _raw_density(self, attention: Tensor) -> Tensor:
        """1 - p(a), times the prior's density with ``prior='lamp'``."""
        raw = 1.0 - self.pruning_ratios(attention)
        if self.config.prior_in_force != "lamp":
            return raw
        return raw * self._prior.to(raw.device, raw.dtype)

    def _refresh_prior(self) -> None:
        """``prior='lamp'``: LAMP's per-layer densities at the current budget, from the
        estimator's fixed sample of each layer's dense weights. Refreshed when the
        estimator's bands are (every ``attention_interval`` steps: the attentions change no
        more often), at least every PRIOR_INTERVAL_MAX steps and at every exact mask
        update."""
        samples = [self._sample(name, dense_weight(module).detach())
                   for name, module in self.layers.items()]
        kept = (1.0 - self.target_sparsity_now()) * self.total_numel
        self._prior = lamp_densities(samples, [self.numels[n] for n in self.layers], kept)
        self._prior_ready = True

    def _numel_vector(self, like: Tensor) -> Tensor:
        if self._numel.device != like.device:
            self._numel = self._numel.to(like.device)
        return self._numel

    def density_vector(self, attention: Tensor | None = None) -> Tensor:
        """Per-layer kept fraction now, differentiable in the attentions."""
        if attention is None:
            attention = self._attention_vector()
        raw = self._raw_density(attention)
        if self.config.variant == "paper":
            return raw
        return project_to_budget(raw, self._numel_vector(raw), 1.0 - self.target_sparsity_now(),
                                 self._floor, soft_floor=self.config.soft_floor)

    def layer_densities(self) -> dict[str, float]:
        with torch.no_grad():
            densities = self.density_vector().tolist()
        return dict(zip(self.layers, densities))

    def _ramp_done(self) -> bool:
        return self.schedule_done(self.step_count)

    def update_masks(self, optimizer: torch.optim.Optimizer | None = None,
                     exact: bool | None = None) -> None:
        """Masks at the current per-layer densities, and the estimator's bands.

        ``exact`` (default: ``exact_masks``, or the ramp is over) keeps exactly the rounded
        count; otherwise the threshold is an order statistic (``kthvalue``, linear time) of a
        fixed sample of the layer's magnitudes (of the whole layer when it is small).
        """
        if exact is None:
            exact = self.config.exact_masks or self._ramp_done()
        # the estimator's bands: refreshed at the start of each attention interval
        bands = not self.paper_estimator and (
            not self._bands or self.step_count % self.attention_interval == 0)
        prior = self.config.prior_in_force == "lamp" and (
            exact or not self._prior_ready or self.step_count % self._prior_interval == 0)
        if not (exact or bands or prior or len(self._thresholds) < len(self.layers)
                or self.step_count % self.config.count_interval == 0):
            with torch.no_grad():  # the weights moved: the same thresholds, new masks
                for name, module in self.layers.items():
                    magnitude = self._magnitude(name, dense_weight(module).detach())
                    torch.ge(magnitude, self._thresholds[name], out=self.masks[name].mask)
                    self._keep_units(name, magnitude, self.masks[name].mask, again=True)
            return
        if prior:
            self._refresh_prior()  # a sort of each layer's sample
        densities = self.layer_densities()
        half = self.config.band / 2
        with torch.no_grad():
            for name, module in self.layers.items():
                numel = self.numels[name]
                keep = max(self.min_counts[name], keep_count(numel, densities[name]))
                magnitude = dense_weight(module).detach().abs()
                flat = magnitude.reshape(-1)
                buffer = self.masks[name].mask
                index = self._mask_index[name]
                size = numel if index is None else index.numel()
                kept_in_sample = keep / numel * size
                if exact or keep >= numel or (index is not None
                                             and kept_in_sample < MIN_SAMPLED_KEPT):
                    forced = self._keep_units(name, magnitude)
                    scores = magnitude if forced is None else magnitude.masked_fill(
                        forced, float("inf"))
                    buffer.copy_(topk_mask(scores, keep))
                    threshold = scores.masked_fill(~buffer, float("inf")).min()
                else:
                    sample = flat if index is None else flat[index]
                    rank = min(size, max(1, size - round(kept_in_sample) + 1))
                    threshold = torch.kthvalue(sample, rank).values
                    torch.ge(magnitude, threshold, out=buffer)
                    self._keep_units(name, magnitude, buffer)
                self._thresholds[name] = threshold
                self.kept[name] = keep
                if bands:
                    sample = self._sample(name, flat).float()
                    size = sample.numel()
                    pruned = 1.0 - keep / numel
                    lo, hi = (torch.kthvalue(sample, min(size, max(1, round(q * size)))).values
                              for q in (pruned - half, pruned + half))
                    self._bands[name] = (lo, hi)

    def _magnitude(self, name: str, weight: Tensor) -> Tensor:
        """``|weight|``, on a CPU written into a buffer kept per layer: there a fresh
        allocation of a large layer's size on every step costs as much as the comparison."""
        if weight.device.type != "cpu":  # a caching allocator makes the copy cheap there
            return weight.abs()
        buffer = self._magnitudes.get(name)
        if buffer is None or buffer.shape != weight.shape or buffer.dtype != weight.dtype \
                or buffer.device != weight.device:
            buffer = self._magnitudes[name] = torch.empty_like(weight)
        return torch.abs(weight, out=buffer)

    def _unit_layers(self) -> set[str]:
        cfg = self.config
        if cfg.keep_every_unit is not None:
            return set(self.layers) if cfg.keep_every_unit else set()
        if cfg.variant != "target":
            return set()
        leaves = [(name, module) for name, module in self.model.named_modules()
                  if name in self.layers or ("parametrizations" not in name.split(".")
                                             and not any(True for _ in module.children()))]
        chosen = set()
        for (name, module), (_, after) in zip(leaves, leaves[1:]):
            if (name in self.layers and isinstance(after, nn.modules.batchnorm._BatchNorm)
                    and not isinstance(module, nn.modules.conv._ConvTransposeNd)  # rows = inputs
                    and after.num_features == module.weight.shape[0]):
                chosen.add(name)
        return chosen

    def _keep_units(self, name: str, magnitude: Tensor, mask: Tensor | None = None,
                    again: bool = False) -> Tensor | None:
        """Each row's largest weight (``keep_every_unit``): set in ``mask`` if given, and
        returned as a mask of its own when not. None when the option is off. ``again``: the
        rows' largest weights found at the last kept-count update (no pass over the layer)."""
        if name not in self.unit_layers or magnitude.dim() < 2:
            return None
        rows = magnitude.reshape(magnitude.shape[0], -1)
        best = self._unit_index.get(name) if again else None
        if best is None or best.device != magnitude.device:
            best = rows.argmax(dim=1, keepdim=True)
            self._unit_index[name] = best
        if mask is not None and mask.is_contiguous():
            mask.view(rows.shape).scatter_(1, best, True)
            return mask
        forced = torch.zeros(rows.shape, dtype=torch.bool, device=magnitude.device)
        forced = forced.scatter_(1, best, True).view(magnitude.shape)
        return forced if mask is None else mask.logical_or_(forced)

    def finalize(self) -> None:
        """Jump to the end of the schedule; set the final masks unless they are frozen."""
        if self.frozen:
            self.step_count = max(self.step_count, self.total_steps)
            return
        self.step_count = max(self.step_count, self.total_steps)
        self.update_masks(exact=True)

    def _freeze(self) -> None:
        """End of the ramp: exact masks at the target, then nothing changes any more."""
        self.update_masks(exact=True)
        self.frozen = True
        self.zero_grad()
        log.debug("masks and attentions frozen at step %d", self.step_count)

    def _sample_indices(self, size: int) -> dict[str, Tensor | None]:
        """A fixed random subset of at most ``size`` of each layer's weights (None: all).

        Drawn once from a generator with a constant seed, so it is the same on every rank and
        after a resume; random rather than strided, since a stride aliases with the layout of
        the weight (e.g. the same pixel column of every row of a first Linear layer).
        """
        generator = torch.Generator().manual_seed(20211103)
        samples: dict[str, Tensor | None] = {}
        for name, module in self.layers.items():
            numel = self.numels[name]
            device = module.weight.device
            samples[name] = None if numel <= size else torch.randperm(
                numel, generator=generator)[:size].sort().values.to(device)
        return samples

    def _sample(self, name: str, tensor: Tensor) -> Tensor:
        """The estimator's sample of a layer's tensor (weights or gradients)."""
        flat = tensor.reshape(-1)
        index = self._samples[name]
        return flat if index is None else flat.index_select(0, index)

    # ------------------------------------------------------------------ hooks
    def regularizer(self) -> Tensor | float:
        """gamma * (S(A) - r)^2, the paper variant's sparsity regulariser on the attentions.

        Equation 3's lambda * sum(w_hat^2) is added to the gradients in :meth:`after_backward`
        (same gradient, 2 lambda w_hat, without building a graph for it).
        """
        cfg = self.config
        if cfg.variant != "paper" or cfg.gamma == 0 or self.frozen:
            return 0.0
        density = self.density_vector()
        numel = self._numel_vector(density)
        kept_fraction = (density * numel).sum() / numel.sum()
        return cfg.gamma * (kept_fraction - cfg.density_target) ** 2

    def _attention_step_now(self) -> bool:
        return (self.step_count + 1) % self.attention_interval == 0

    def _mask_step_now(self) -> bool:
        return self.update_due(self.step_count + 1)

    def after_backward(self) -> None:
        """Loss-aware estimate of dL/d(density) per layer, carried to a_l through p_l.

        Restoring a pruned weight w_j changes the loss by about g_j * w_j, and pruning a kept
        one by about -g_j * w_j (g: gradient at the sparse weights, which the straight-through
        mask gives for every weight). Averaging g_j * w_j over the band of weights whose
        magnitudes straddle the layer's threshold, times the layer size, estimates the change
        of the loss per unit of kept fraction: a soft-mask surrogate of the threshold gradient.
        With ``saliency='second_order'`` the average is of 0.5 (g_j w_j)^2, the loss that
        removing such a weight costs under a squared-gradient curvature, and the marginal is
        its negative; with ``saliency='restore'`` the average of g_j * w_j runs over the
        band's weights below the threshold only. The statistic is accumulated on every
        mask-update step (``accumulate``) and turned into an attention gradient every
        ``attention_interval`` steps.
        """
        if not self.paper_estimator and not self.frozen:
            step_now = self._attention_step_now()
            if step_now or (self.config.accumulate and self._mask_step_now()):
                self._accumulate_statistic()
            if step_now:
                self._estimate_attention_gradient()
        if self.config.weight_decay:  # equation 3: lambda * sum(w_hat^2), as a gradient
            with torch.no_grad():
                for module in self.layers.values():
                    weight = dense_weight(module)
                    if weight.grad is not None:
                        weight.grad.add_(module.weight, alpha=2 * self.config.weight_decay)

    def _band(self, name: str, magnitude: Tensor) -> Tensor:
        """Which of the layer's sampled weights (``magnitude``) the estimator averages over:
        those within its band around the threshold (with ``saliency='restore'``, only
        those below the threshold)."""
        low, high = self._bands[name]
        band = (magnitude >= low) & (magnitude <= high)
        if self.config.saliency == "restore":
            band &= magnitude < self._thresholds[name]
        return band

    def _accumulate_statistic(self) -> None:
        second = self.config.saliency == "second_order"
        with torch.no_grad():
            for i, (name, module) in enumerate(self.layers.items()):
                weight = dense_weight(module)
                if weight.grad is None or name not in self._bands:
                    continue
                sample = self._sample(name, weight.detach()).float()
                grad = self._sample(name, weight.grad).float()
                band = self._band(name, sample.abs())
                value = grad * sample
                if second:
                    value = 0.5 * value * value
                if self._stat_sum.device != value.device:
                    self._stat_sum = self._stat_sum.to(value.device)
                    self._stat_count = self._stat_count.to(value.device)
                self._stat_sum[i] += (value * band).sum()
                self._stat_count[i] += band.sum()

    def _estimate_attention_gradient(self) -> None:
        mean = self._stat_sum / self._stat_count.clamp_min(1.0)
        self._stat_sum.zero_()
        self._stat_count.zero_()
        if not bool(torch.isfinite(mean).all()):
            warn_once(self, "non-finite gradient: attention update skipped", self.step_count)
            return
        sign = -1.0 if self.config.saliency == "second_order" else 1.0
        attention = self._attention_vector().detach().requires_grad_(True)
        with torch.enable_grad():
            density = self.density_vector(attention)
            numel = self._numel_vector(density)
            marginal = sign * mean.to(density.device, density.dtype) * numel
            surrogate = (density * marginal).sum()
            if not surrogate.requires_grad:  # every layer clamped: nothing to learn now
                return
            (grad,) = torch.autograd.grad(surrogate, attention)
        for name, value in zip(self.layers, grad):
            param = self.masks[name].attention
            param.grad = value.detach() if param.grad is None else param.grad + value.detach()

    def step(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Attention step, clip to [floor, 1], masks when due; at the end of the ramp (target
        variant) exact masks, then masks and attentions stay fixed."""
        if self.frozen:
            self.step_count += 1
            return
        if any(p.grad is not None for p in self.parameters()):
            if self.log_space:
                self._log_space_step()
            else:
                self.optimizer.step()
            with torch.no_grad():
                for param in self.parameters():
                    param.clamp_(self.attention_floor, 1.0)
                if (self.config.soft_floor and self.config.variant == "target"
                        and not self.scales_output):  # a lift would rescale the output
                    self._lift_to_floor()
            self.zero_grad()
        super().step(optimizer)
        cfg = self.config
        if cfg.variant == "target" and cfg.freeze_after_ramp and self._ramp_done():
            self._freeze()

    def _log_space_step(self) -> None:
        """One optimiser step on log a (``attention_space='log'``): d/d(log a) = a d/da; the
        optimiser's state lives in log space. Then every attention is divided by the largest
        one if that exceeds 1 (no density changes with alpha = 1: the budget projection
        rescales the raw densities anyway)."""
        params = self.parameters()
        with torch.no_grad():
            for param in params:
                if param.grad is not None:
                    param.grad.mul_(param)
                param.copy_(param.clamp_min(self.attention_floor).log())
        self.optimizer.step()
        with torch.no_grad():
            top = max(float(param) for param in params)
            for param in params:
                param.sub_(max(top, 0.0)).exp_()

    def _lift_to_floor(self) -> None:
        """Raise every attention below the one at which its layer reaches its lowest kept
        fraction at the current budget to exactly that one (``soft_floor``)."""
        raw_density = self._raw_density(self._attention_vector().detach())
        found = _budget_scale(raw_density, self._numel, 1.0 - self.target_sparsity_now(),
                              self._floor)
        if found is None:
            return
        scale, raw, _, lower, _ = found
        boundary = np.minimum(1.0, lower / max(scale, 1e-12))
        for name, value, edge, factor in zip(self.layers, raw, boundary, self._prior.tolist()):
            if value < edge:  # the attention whose own density times the prior's is edge
                own = min(1.0, edge / max(factor, 1e-12))
                lifted = 1.0 - (1.0 - own) ** (1.0 / self.config.alpha)
                self.masks[name].attention.fill_(min(1.0, max(self.attention_floor, lifted)))

    # ------------------------------------------------------------------ export and state
    def fold_into_weights(self, model: nn.Module) -> None:
        """a * (W x + b) = (a W) x + a b: fold the attention into weight and bias."""
        if not self.scales_output:
            return
        with torch.no_grad():
            for name in self.layers:
                module = model.get_submodule(name)
                attention = masked_weight(module).attention.detach()
                dense_weight(module).mul_(attention)  # once: tied layers share this weight
                for each in (module, *(model.get_submodule(a) for a in self.tied.get(name, ()))):
                    if getattr(each, "bias", None) is not None:
                        each.bias.mul_(attention)
                    remove_output_scaling(each)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "attention_optimizer": self.optimizer.state_dict(),
                "bands": {k: [float(v[0]), float(v[1])] for k, v in self._bands.items()},
                "frozen": self.frozen, "prior": self._prior.tolist(),
                "thresholds": {k: float(v) for k, v in self._thresholds.items()},
                "statistic": [self._stat_sum.cpu().tolist(), self._stat_count.cpu().tolist()],
                "unit_index": {k: v.reshape(-1).cpu().tolist()
                               for k, v in self._unit_index.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.optimizer.load_state_dict(state["attention_optimizer"])
        device = self._stat_sum.device
        self._bands = {k: (torch.tensor(float(v[0]), device=device),
                           torch.tensor(float(v[1]), device=device))
                       for k, v in state.get("bands", {}).items()}
        self.frozen = bool(state.get("frozen", False))
        if "prior" in state:
            if self.config.prior_in_force == "lamp":  # otherwise the factor stays at one
                self._prior = torch.tensor(state["prior"], dtype=torch.float64)
            self._prior_ready = True
        else:  # a state from before the prior: recomputed at the next mask update
            self._prior_ready = False
            if self.config.prior is None and self.config.variant == "target":
                log.warning("this ASWL state predates the LAMP prior (the default until then was "
                            "a uniform start); it continues with prior=lamp. To continue it as "
                            "it was trained, set method.prior=uniform")
        self._thresholds = {k: torch.tensor(float(v), device=dense_weight(self.layers[k]).device)
                            for k, v in state.get("thresholds", {}).items()}
        self._unit_index = {
            k: torch.tensor(v, dtype=torch.long, device=dense_weight(self.layers[k]).device)
            .reshape(-1, 1) for k, v in state.get("unit_index", {}).items() if k in self.layers}
        if "statistic" in state:
            total, count = state["statistic"]
            self._stat_sum = torch.tensor(total, dtype=torch.float32, device=device)
            self._stat_count = torch.tensor(count, dtype=torch.float32, device=device)


# --------------------------------------------------------------------------- attention parts
def attach_attention(mask: nn.Module, init: float) -> None:
    """Register ASWL's learnable scalar ``attention`` on a layer's mask parametrization."""
    mask.register_parameter("attention",
                            nn.Parameter(torch.tensor(float(init), dtype=torch.float32)))


def scaled_output_hook(module: nn.Module, inputs: Any, output: Tensor) -> Tensor:
    """Forward hook for ASWL's equation 1: the layer's output times its attention."""
    return output * masked_weight(module).attention


def remove_output_scaling(module: nn.Module) -> None:
    for key, hook in list(module._forward_hooks.items()):
        if hook is scaled_output_hook:
            del module._forward_hooks[key]


def project_to_budget(density: Tensor, numel: Tensor, budget: float,
                      floor: float | list[float], soft_floor: bool = False) -> Tensor:
    """Scale raw densities by one shared factor c so sum(n_l * clamp(c d_l)) = budget * N.

    Each layer stays in [max(floor_l, 1/n_l), 1] (``floor``: one number, or one per layer).
    The factor of the free (unclamped) layers is written differentiably, c = (budget N - kept
    by clamped layers) / sum_free n_l d_l, so the gradient through it only moves the split,
    never the total. c itself is found exactly in numpy (:func:`_shared_scale`): this runs on
    every mask update.
    """
    found = _budget_scale(density, numel, budget, floor)
    if found is None:
        return torch.ones_like(density)
    scale, raw, sizes, lower, target = found
    scaled = scale * raw
    free_np = (scaled > lower) & (scaled < 1.0)
    clamped = torch.as_tensor(np.clip(scaled, lower, 1.0), dtype=density.dtype,
                              device=density.device)
    if not free_np.any():
        return clamped
    free = torch.as_tensor(free_np, device=density.device)
    clamped_kept = float((sizes * np.clip(scaled, lower, 1.0) * ~free_np).sum())
    shared = (target - clamped_kept) / (numel * density * free).sum()
    projected = torch.where(free, shared * density, clamped)
    if not soft_floor or not density.requires_grad:
        return projected
    soft_np = free_np | (scaled <= lower)
    soft = torch.as_tensor(soft_np, device=density.device)
    held_kept = float((sizes * np.clip(scaled, lower, 1.0) * ~soft_np).sum())
    soft_shared = (target - held_kept) / (numel * density * soft).sum()
    carrier = torch.where(soft, soft_shared * density, torch.zeros_like(density))
    return projected.detach() + (carrier - carrier.detach())


def _budget_scale(density: Tensor, numel: Tensor, budget: float, floor: float | list[float]
                  ) -> tuple[float, np.ndarray, np.ndarray, np.ndarray, float] | None:
    """The shared scale c of :func:`project_to_budget` with the numpy arrays it came from:
    (c, raw densities, layer sizes, lower bounds, kept-weight target); None when the budget
    keeps every weight."""
    sizes = numel.detach().cpu().double().numpy()
    total = float(sizes.sum())
    target = budget * total
    if target >= total - 0.5:
        return None
    raw = np.maximum(density.detach().cpu().double().numpy(), 1e-12)
    lower = np.maximum(np.asarray(floor, dtype=np.float64), 1.0 / sizes)
    return _shared_scale(raw, sizes, lower, target), raw, sizes, lower, target


def _shared_scale(raw: np.ndarray, sizes: np.ndarray, lower: np.ndarray,
                  target: float) -> float:
    """The c with sum(sizes * clip(c * raw, lower, 1)) = target.

    The kept count is piecewise linear and nondecreasing in c, with breakpoints where a layer
    leaves its lower bound (c = lower / raw) or reaches 1 (c = 1 / raw): evaluate it at every
    breakpoint, then solve the linear piece that crosses the target.
    """
    points = np.unique(np.concatenate([lower / raw, 1.0 / raw]))
    kept = (sizes * np.clip(points[:, None] * raw, lower, 1.0)).sum(axis=1)
    above = int(np.searchsorted(kept, target))  # first breakpoint keeping >= target
    if above == 0:
        return float(points[0])  # every layer at its lower bound already keeps enough
    if above >= len(points):
        return float(points[-1])
    lo, hi = points[above - 1], points[above]
    middle = (lo + hi) / 2 * raw
    free = (middle > lower) & (middle < 1.0)
    slope = float((sizes * raw * free).sum())
    if slope <= 0:
        return float(hi)
    fixed = float((sizes * np.clip(lo * raw, lower, 1.0) * ~free).sum())
    return float((target - fixed) / slope)


class SharedAdam(torch.optim.Optimizer):
    """Adam whose second moment is one number for all its parameters: the running mean of
    their gradients' mean square. Each parameter keeps its own first moment, so one step
    moves the parameters in proportion to their (averaged) gradients, with one overall scale
    that adapts as Adam's does (``attention_optimizer='adam_shared'``). One step count per
    group serves the bias corrections: meant for parameters that all get a gradient at every
    step, as ASWL's attentions do."""

    def __init__(self, params: Any, lr: float = 0.01, betas: tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8) -> None:
        super().__init__(params, {"lr": lr, "betas": betas, "eps": eps})

    def step(self, closure: Any = None) -> Any:
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        with torch.no_grad():
            self._update()
        return loss

    def _update(self) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            beta1, beta2 = group["betas"]
            shared = self.state[group["params"][0]]  # the group's step count and moment
            shared["shared_step"] = step = shared.get("shared_step", 0) + 1
            total = torch.stack([p.grad.float().square().sum() for p in params])
            square = total.double().sum().item() / sum(p.numel() for p in params)  # one sync
            shared["shared_square"] = (beta2 * shared.get("shared_square", 0.0)
                                       + (1 - beta2) * square)
            scale = (shared["shared_square"] / (1 - beta2 ** step)) ** 0.5 + group["eps"]
            for param in params:
                state = self.state[param]
                if "first_moment" not in state:
                    state["first_moment"] = torch.zeros_like(param)
                moment = state["first_moment"]
                moment.mul_(beta1).add_(param.grad, alpha=1 - beta1)
                param.sub_(moment, alpha=group["lr"] / ((1 - beta1 ** step) * scale))


@dataclass
class ASWLPaperConfig(ASWLConfig):
    mask_interval: int = 1
    variant: str = "paper"
    weight_decay: float | None = 2.5e-4
    attention_optimizer: str = "sgd"
    attention_lr: float = 0.005
    attention_interval: int = 1
    gamma: float = 0.1
    exact_masks: bool = True
    freeze_after_ramp: bool = False


@register_method("aswl_paper")
class ASWLPaper(ASWL):
    """ASWL as published (He, Shi & Dong 2021): equations 1-3, SGD on the attentions.

    Same class as :class:`ASWL` with ``variant='paper'`` and the authors' attention optimiser
    as defaults; ``target_sparsity`` is not enforced (the sparsity follows alpha and gamma).
    """

    config_class = ASWLPaperConfig
