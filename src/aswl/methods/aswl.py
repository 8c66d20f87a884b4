"""ASWL: attention-based simultaneous sparse structure and weight learning.

He, Shi & Dong, "Learning Pruned Structure and Weights Simultaneously from Scratch: an
Attention based Approach", arXiv 2111.02399 (2021). Each prunable layer l has a learned scalar
attention a_l in [0.01, 1] that

1. scales the layer's output, f(x) = a_l * f_l(x; w_l * m_l)           (``scale_output``)
2. sets its pruning ratio, p_l = min((1 - a_l)^alpha, 0.99)
3. is regularised, gamma * (S(A) - r)^2 with S the global kept fraction (paper variant).

Dense and sparse weights are both tracked (straight-through), masks are recomputed from the
dense magnitudes. Two variants, both with per-layer ratios from the attentions:

* ``paper``: the equations as published. Gradient to a_l from eq. 1 and the regulariser.
* ``target`` (default): the user asks for a global sparsity; a cubic ramp sets the budget;
  raw densities 1 - p_l are projected onto the budget by one shared scale, so the final model
  has exactly the target, and the attentions learn the split from a loss-aware estimate of
  each layer's marginal loss (see :meth:`ASWL.after_backward`).
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor, nn

from aswl.methods.base import (
    ConfigError,
    MethodConfig,
    SparseMethod,
    check,
    register_method,
)
from aswl.sparse import dense_weight, masked_weight

log = logging.getLogger(__name__)

ATTENTION_MIN = 0.01
ESTIMATOR_SAMPLE = 16384
"""Weights per layer (a strided sample) the loss-aware estimator looks at."""


@dataclass
class ASWLConfig(MethodConfig):
    mask_interval: int = 16
    """Masks and attentions are updated every this many steps. 16 (as DPF) costs about 1.01x a
    dense step; 1 (the paper's cadence, and the paper variant's default) about 1.5x, and was
    0.4 points more accurate at 98% on Fashion-MNIST LeNet-300-100 (docs/RESULTS.md)."""
    variant: str = "target"
    """``target`` (reaches target_sparsity exactly, learned split) or ``paper`` (equations 1-3)."""
    alpha: float = 1.0
    """Pruning factor: p = (1 - a)^alpha."""
    gamma: float = 1.0
    """Attention decay: weight of the sparsity regulariser (paper variant)."""
    density_target: float = 0.0
    """r in phi = (S - r)^2: the global kept fraction the regulariser pulls towards (paper)."""
    init_attention: float = 0.5
    attention_optimizer: str = "adam"
    """``sgd`` (momentum 0.9, as the authors) or ``adam``."""
    attention_lr: float = 0.01
    attention_momentum: float = 0.9
    estimator: str = "auto"
    """``paper`` (gradient from eq. 1 and phi only), ``loss_aware`` (adds the straight-through
    marginal-loss estimate), ``auto`` (paper for the paper variant, loss_aware for target)."""
    scale_output: bool | None = None
    """Equation 1. None: on for the paper variant, off for target (keeps the output scale)."""
    weight_decay: float | None = None
    """Equation 3's lambda: a number adds lambda * sum(w_hat^2) on the *sparse* weights of the
    pruned layers (gradient 2 lambda w_hat; 2.5e-4 matches an optimiser weight decay of 5e-4),
    as published. None (target default): the optimiser's weight decay acts on the dense
    weights, pruned ones included, which measured better (docs/RESULTS.md)."""
    max_ratio: float = 0.99
    """Cap on every layer's pruning ratio."""
    band: float = 0.05
    """Fraction of a layer's weights around its threshold used by the loss-aware estimator."""

    def validate(self) -> None:
        super().validate()
        check(self.variant in ("target", "paper"), "variant", self.variant, "'target' or 'paper'")
        check(self.alpha > 0, "alpha", self.alpha, "a number > 0")
        check(self.gamma >= 0, "gamma", self.gamma, "a number >= 0")
        check(0.0 <= self.density_target <= 1.0, "density_target", self.density_target,
              "a fraction in [0, 1]")
        check(ATTENTION_MIN <= self.init_attention <= 1.0, "init_attention",
              self.init_attention, "a number in [0.01, 1]")
        check(self.attention_optimizer in ("sgd", "adam"), "attention_optimizer",
              self.attention_optimizer, "'sgd' or 'adam'")
        check(self.attention_lr >= 0, "attention_lr", self.attention_lr, "a number >= 0")
        check(self.estimator in ("auto", "paper", "loss_aware"), "estimator", self.estimator,
              "'auto', 'paper' or 'loss_aware'")
        check(self.weight_decay is None or self.weight_decay >= 0, "weight_decay",
              self.weight_decay, "null or a number >= 0")
        check(0.0 < self.max_ratio <= 0.99, "max_ratio", self.max_ratio, "a number in (0, 0.99]")
        check(0.0 < self.band <= 0.5, "band", self.band, "a fraction in (0, 0.5]")
        if self.variant == "target":
            check(self.target_sparsity <= self.max_ratio, "target_sparsity",
                  self.target_sparsity, f"at most max_ratio = {self.max_ratio}")


@register_method("aswl")
class ASWL(SparseMethod):
    """ASWL (He, Shi & Dong 2021, arXiv 2111.02399); see the module docstring."""

    config_class = ASWLConfig
    config: ASWLConfig

    def __init__(self, model: nn.Module, config: ASWLConfig | None = None,
                 total_steps: int = 1, **overrides: Any) -> None:
        super().__init__(model, config, total_steps, **overrides)
        cfg = self.config
        self._bands: dict[str, tuple[float, float]] = {}
        self.paper_estimator = cfg.estimator == "paper" or (
            cfg.estimator == "auto" and cfg.variant == "paper")
        self.scales_output = (cfg.variant == "paper") if cfg.scale_output is None \
            else cfg.scale_output
        if cfg.variant == "target" and self.paper_estimator and not self.scales_output:
            raise ConfigError("method.estimator = 'paper' in the target variant needs "
                              "method.scale_output = true (equation 1 is then the attentions' "
                              "only gradient); or use estimator = 'loss_aware'")
        self.attention_floor = max(ATTENTION_MIN, 1.0 - cfg.max_ratio ** (1.0 / cfg.alpha))
        """Below this attention p is capped anyway, and the gradient through the cap is 0."""
        self._numel = torch.tensor([float(self.numels[n]) for n in self.layers])
        self._samples = self._sample_indices()

    def on_attach(self) -> None:
        """One attention per layer (on its mask parametrization, so it is in the model's
        state_dict), the output hook of equation 1, and the attentions' optimiser."""
        cfg = self.config
        for name, module in self.layers.items():
            attach_attention(self.masks[name], cfg.init_attention)
            if self.scales_output:
                module.register_forward_hook(scaled_output_hook)
            elif cfg.variant == "target":
                # Not used in the forward pass: its gradient comes from the estimator only
                # (and DDP must not wait for a gradient that autograd never produces).
                self.masks[name].attention.requires_grad_(False)
        params = self.parameters()
        if cfg.attention_optimizer == "sgd":
            self.optimizer: torch.optim.Optimizer = torch.optim.SGD(
                params, lr=cfg.attention_lr, momentum=cfg.attention_momentum)
        else:
            self.optimizer = torch.optim.Adam(params, lr=cfg.attention_lr)

    def attentions(self) -> dict[str, float]:
        return {name: float(self.masks[name].attention.detach()) for name in self.layers}

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
        """Equation 2: p = min((1 - a)^alpha, max_ratio), differentiable in a."""
        base = 1.0 - attention
        ratio = torch.where(base > 0, base.clamp_min(1e-12) ** self.config.alpha,
                            torch.zeros_like(base))  # a = 1 prunes nothing, for every alpha
        return ratio.clamp_max(self.config.max_ratio)

    def _numel_vector(self, like: Tensor) -> Tensor:
        if self._numel.device != like.device:
            self._numel = self._numel.to(like.device)
        return self._numel

    def density_vector(self, attention: Tensor | None = None) -> Tensor:
        """Per-layer kept fraction now, differentiable in the attentions."""
        if attention is None:
            attention = self._attention_vector()
        raw = 1.0 - self.pruning_ratios(attention)
        if self.config.variant == "paper":
            return raw
        return project_to_budget(raw, self._numel_vector(raw), 1.0 - self.target_sparsity_now(),
                                 1.0 - self.config.max_ratio)

    def layer_densities(self) -> dict[str, float]:
        with torch.no_grad():
            densities = self.density_vector().tolist()
        return dict(zip(self.layers, densities))

    def update_masks(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        super().update_masks(optimizer)
        if not self.paper_estimator:
            self._refresh_bands()

    def _sample_indices(self) -> dict[str, Tensor | None]:
        """A fixed random subset of each large layer's weights for the estimator.

        Drawn once from a generator with a constant seed, so it is the same on every rank and
        after a resume; random rather than strided, since a stride aliases with the layout of
        the weight (e.g. the same pixel column of every row of a first Linear layer).
        """
        generator = torch.Generator().manual_seed(20211103)
        samples: dict[str, Tensor | None] = {}
        for name, module in self.layers.items():
            numel = self.numels[name]
            device = module.weight.device
            samples[name] = None if numel <= ESTIMATOR_SAMPLE else torch.randperm(
                numel, generator=generator)[:ESTIMATOR_SAMPLE].sort().values.to(device)
        return samples

    def _sample(self, name: str, tensor: Tensor) -> Tensor:
        flat = tensor.reshape(-1)
        index = self._samples[name]
        return flat if index is None else flat[index]

    def _refresh_bands(self) -> None:
        """Magnitudes bounding the band of weights around each layer's threshold.

        Order statistics of the layer's fixed sample of at most ESTIMATOR_SAMPLE weights.
        """
        half = self.config.band / 2
        with torch.no_grad():
            for name, module in self.layers.items():
                sample = self._sample(name, dense_weight(module).detach()).abs().float()
                pruned = 1.0 - self.kept[name] / self.numels[name]
                ranks = [min(sample.numel(), max(1, round(q * sample.numel())))
                         for q in (pruned - half, pruned + half)]
                lo, hi = (float(torch.kthvalue(sample, rank).values) for rank in ranks)
                self._bands[name] = (lo, hi)

    # ------------------------------------------------------------------ hooks
    def regularizer(self) -> Tensor | float:
        """gamma * (S(A) - r)^2, the paper variant's sparsity regulariser on the attentions.

        Equation 3's lambda * sum(w_hat^2) is added to the gradients in :meth:`after_backward`
        (same gradient, 2 lambda w_hat, without building a graph for it).
        """
        cfg = self.config
        if cfg.variant != "paper" or cfg.gamma == 0:
            return 0.0
        density = self.density_vector()
        numel = self._numel_vector(density)
        kept_fraction = (density * numel).sum() / numel.sum()
        return cfg.gamma * (kept_fraction - cfg.density_target) ** 2

    def _estimating_now(self) -> bool:
        return not self.paper_estimator and self.update_due(self.step_count + 1)

    def after_backward(self) -> None:
        """Loss-aware estimate of dL/d(density) per layer, carried to a_l through p_l.

        Restoring a pruned weight w_j changes the loss by about g_j * w_j, and pruning a kept
        one by about -g_j * w_j (g: gradient at the sparse weights, which the straight-through
        mask gives for every weight). Averaging g_j * w_j over the band of weights whose
        magnitudes straddle the layer's threshold, times the layer size, estimates the change
        of the loss per unit of kept fraction: a soft-mask surrogate of the threshold gradient.
        """
        if self._estimating_now():
            self._estimate_attention_gradient()
        if self.config.weight_decay:  # equation 3: lambda * sum(w_hat^2), as a gradient
            with torch.no_grad():
                for module in self.layers.values():
                    weight = dense_weight(module)
                    if weight.grad is not None:
                        weight.grad.add_(module.weight, alpha=2 * self.config.weight_decay)

    def _estimate_attention_gradient(self) -> None:
        marginal = []
        with torch.no_grad():
            for name, module in self.layers.items():
                weight = dense_weight(module)
                if weight.grad is None:
                    marginal.append(0.0)
                    continue
                sample = self._sample(name, weight.detach())
                grad = self._sample(name, weight.grad)
                lo, hi = self._bands.get(name, (0.0, float("inf")))
                magnitude = sample.abs()
                band = (magnitude >= lo) & (magnitude <= hi)
                count = int(band.sum())
                value = float((grad * sample * band).sum()) / max(1, count)
                marginal.append(value * self.numels[name])
        if not all(math.isfinite(value) for value in marginal):
            log.warning("non-finite gradient at step %d: attention update skipped",
                        self.step_count)
            return
        attention = self._attention_vector().detach().requires_grad_(True)
        with torch.enable_grad():
            density = self.density_vector(attention)
            surrogate = (density * torch.tensor(marginal, device=density.device)).sum()
            if not surrogate.requires_grad:  # every layer clamped: nothing to learn now
                return
            (grad,) = torch.autograd.grad(surrogate, attention)
        for name, value in zip(self.layers, grad):
            param = self.masks[name].attention
            param.grad = value.detach() if param.grad is None else param.grad + value.detach()

    def step(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Attention step, clip to [0.01, 1], then the masks (every ``mask_interval`` steps)."""
        if any(p.grad is not None for p in self.parameters()):
            self.optimizer.step()
            with torch.no_grad():
                for param in self.parameters():
                    param.clamp_(self.attention_floor, 1.0)
            self.zero_grad()
        super().step(optimizer)

    # ------------------------------------------------------------------ export and state
    def fold_into_weights(self, model: nn.Module) -> None:
        """a * (W x + b) = (a W) x + a b: fold the attention into weight and bias."""
        if not self.scales_output:
            return
        with torch.no_grad():
            for name in self.layers:
                module = model.get_submodule(name)
                attention = masked_weight(module).attention.detach()
                dense_weight(module).mul_(attention)
                if getattr(module, "bias", None) is not None:
                    module.bias.mul_(attention)
                remove_output_scaling(module)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "attention_optimizer": self.optimizer.state_dict(),
                "bands": {k: list(v) for k, v in self._bands.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.optimizer.load_state_dict(state["attention_optimizer"])
        self._bands = {k: (float(v[0]), float(v[1])) for k, v in state.get("bands", {}).items()}


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


def project_to_budget(density: Tensor, numel: Tensor, budget: float, floor: float) -> Tensor:
    """Scale raw densities by one shared factor c so sum(n_l * clamp(c d_l)) = budget * N.

    Each layer stays in [max(floor, 1/n_l), 1]. The factor of the free (unclamped) layers is
    written differentiably, c = (budget N - kept by clamped layers) / sum_free n_l d_l, so the
    gradient through it only moves the split, never the total. The search for c runs in numpy
    (a few dozen layers): it is on every mask update.
    """
    sizes = numel.detach().cpu().double().numpy()
    total = float(sizes.sum())
    target = budget * total
    if target >= total - 0.5:
        return torch.ones_like(density)
    raw = np.maximum(density.detach().cpu().double().numpy(), 1e-12)
    lower = np.maximum(floor, 1.0 / sizes)

    def kept(scale: float) -> float:
        return float((sizes * np.clip(scale * raw, lower, 1.0)).sum())

    low, high = 0.0, 1.0
    while kept(high) < target and high < 1e12:
        high *= 2.0
    for _ in range(50):
        mid = (low + high) / 2
        if kept(mid) < target:
            low = mid
        else:
            high = mid
    scaled = high * raw
    free_np = (scaled > lower) & (scaled < 1.0)
    clamped = torch.as_tensor(np.clip(scaled, lower, 1.0), dtype=density.dtype,
                              device=density.device)
    if not free_np.any():
        return clamped
    free = torch.as_tensor(free_np, device=density.device)
    clamped_kept = float((sizes * np.clip(scaled, lower, 1.0) * ~free_np).sum())
    shared = (target - clamped_kept) / (numel * density * free).sum()
    return torch.where(free, shared * density, clamped)


@dataclass
class ASWLPaperConfig(ASWLConfig):
    mask_interval: int = 1
    variant: str = "paper"
    weight_decay: float | None = 2.5e-4
    attention_optimizer: str = "sgd"
    attention_lr: float = 0.005
    gamma: float = 0.1


@register_method("aswl_paper")
class ASWLPaper(ASWL):
    """ASWL as published (He, Shi & Dong 2021): equations 1-3, SGD on the attentions.

    Same class as :class:`ASWL` with ``variant='paper'`` and the authors' attention optimiser
    as defaults; ``target_sparsity`` is not enforced (the sparsity follows alpha and gamma).
    """

    config_class = ASWLPaperConfig
