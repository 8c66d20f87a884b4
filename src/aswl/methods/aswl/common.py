"""What both ASWL variants share: one attention per layer, its learner (optimiser, estimator,
timing: :mod:`aswl.methods.aswl.learner`), magnitude masks at per-layer counts, the optional
equation 1 (output scaling) and equation 3 (sparse decay).

A variant says how attentions become densities (:meth:`ASWLBase.density_vector`) and what
else it does around an attention step; everything else comes from the method contract of
:mod:`aswl.methods.base`: ``scores`` (dense magnitudes), ``layer_densities`` and
``layer_counts`` (the split), ``approximate_masks`` (the sampled threshold during the ramp),
the schedule (when).
"""

from __future__ import annotations

import logging
from typing import Any, cast

import torch
from torch import Tensor, nn

from aswl.methods.aswl.allocation import raw_densities
from aswl.methods.aswl.allocators import Allocator
from aswl.methods.aswl.config import ATTENTION_MIN, ATTENTION_UPDATES, ASWLCommonConfig
from aswl.methods.aswl.estimator import BandEstimator
from aswl.methods.aswl.learner import AttentionLearner
from aswl.methods.base import ConfigError, SparseMethod
from aswl.sparse import TensorSlot, dense_weight, keep_count, masked_weight
from aswl.sparse.schedules import Every, Freeze
from aswl.sparse.threshold import LayerMasks

log = logging.getLogger(__name__)

MASK_SAMPLE = 16384
"""Weights per layer (a fixed random sample) whose order statistic sets a sampled mask."""


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


def min_counts(method: ASWLBase) -> dict[str, int]:
    """Each layer's fewest kept weights (``min_kept``, or the variant's default; a whole row
    per output unit in the ``keep_every_unit`` layers)."""
    counts = {}
    for name, module in method.layers.items():
        wanted = method.config.min_kept
        if wanted is None:
            wanted = int(module.weight.shape[0]) if method.min_kept_is_rows else 1
        if name in method.unit_layers:  # keep_every_unit: at least one weight per row
            wanted = max(wanted, int(module.weight.shape[0]))
        counts[name] = max(1, min(method.numels[name], wanted))
    return counts


def unit_layers(method: ASWLBase) -> set[str]:
    """The layers whose every output unit keeps a weight: ``keep_every_unit``, or by
    default (``units_before_batchnorm``) those followed by a BatchNorm over their outputs."""
    choice = method.config.keep_every_unit
    if choice is not None:
        return set(method.layers) if choice else set()
    if not method.units_before_batchnorm:
        return set()
    leaves = [(name, module) for name, module in method.model.named_modules()
              if name in method.layers or ("parametrizations" not in name.split(".")
                                           and not any(True for _ in module.children()))]
    chosen = set()
    for (name, module), (_, after) in zip(leaves, leaves[1:]):
        if (name in method.layers and isinstance(after, nn.modules.batchnorm._BatchNorm)
                and not isinstance(module, nn.modules.conv._ConvTransposeNd)  # rows = inputs
                and after.num_features == module.weight.shape[0]):
            chosen.add(name)
    return chosen


class ASWLBase(SparseMethod):
    """The shared base of :class:`~aswl.methods.aswl.ASWL` and
    :class:`~aswl.methods.aswl.ASWLPaper` (see the module docstring): the attention learner
    and the masks; a variant names its allocator."""

    config: ASWLCommonConfig
    allocator_class: type[Allocator] = Allocator
    """Attentions' raw densities -> kept fractions (:mod:`aswl.methods.aswl.allocators`)."""
    optional_state = ("prior",)  # saved since the LAMP prior; recomputed when absent
    scales_output_default = False
    """``scale_output`` when it is None."""
    min_kept_is_rows = False
    """``min_kept`` when it is None: the layer's rows (True) or 1."""
    units_before_batchnorm = False
    """``keep_every_unit`` when it is None: the layers followed by a BatchNorm (True) or none."""
    loss_aware = True
    """The band estimator gives the attentions their gradient."""
    attention_in_graph = False
    """The attentions take part in autograd even without equation 1 (the paper variant's
    regulariser is a function of them); otherwise, without output scaling, they are kept out
    of it (DDP must not wait for a gradient that autograd never produces)."""

    def __init__(self, model: nn.Module, config: ASWLCommonConfig | None = None,
                 total_steps: int | None = None, **overrides: Any) -> None:
        super().__init__(model, config, total_steps, **overrides)
        cfg = self.config
        self.frozen = False
        self.scales_output = (self.scales_output_default if cfg.scale_output is None
                              else cfg.scale_output)
        self.numel_vector = torch.tensor([float(self.numels[n]) for n in self.layers])
        self.count_timing = Every(cfg.count_interval)
        """When a mask update during the ramp recounts the kept weights (``count_interval``)."""
        self.unit_layers = unit_layers(self)
        """The layers whose every output unit keeps a weight (``keep_every_unit``)."""
        self.min_counts = min_counts(self)
        self.floor = [max(1.0 - cfg.ratio_cap, self.min_counts[n] / self.numels[n])
                      for n in self.layers]
        """Each layer's lowest kept fraction (the cap, or its minimum count)."""
        self.learner = AttentionLearner(
            self, BandEstimator(self.layers, cfg.band) if self.loss_aware else None,
            ATTENTION_UPDATES, floor=max(ATTENTION_MIN, 1.0 - cfg.ratio_cap ** (1.0 / cfg.alpha)))
        """The attentions' optimiser, estimator and timing (:mod:`.learner`); their floor:
        below it p is capped anyway (the gradient through the cap is 0), or the fixed lower
        end of the range (0.01)."""
        self.layer_masks = LayerMasks(self.numels, {n: m.weight.device
                                                    for n, m in self.layers.items()},
                                      MASK_SAMPLE, self.unit_layers)
        self._magnitudes: dict[str, Tensor] = {}
        self.allocator = self.allocator_class(self)
        self.freeze = Freeze(self.schedule, self.allocator.freezes)
        """Masks and attentions fixed from the end of the ramp (the allocator's choice)."""

    @property
    def prior(self) -> Tensor:
        """Per-layer factor on the raw densities (the target variant's LAMP densities)."""
        return self.allocator.prior

    @property
    def estimator(self) -> BandEstimator | None:
        """The learner's loss-aware band statistic (None: not loss-aware)."""
        return cast("BandEstimator | None", self.learner.estimator)

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        """The attentions' optimiser (the learner's, built at attach)."""
        return self.learner.optimizer

    # ------------------------------------------------------------------ contract: state
    def on_attach(self) -> None:
        """One attention per layer (on its mask parametrization, so it is in the model's
        state_dict), the output hook of equation 1 and the attentions' optimiser."""
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
            elif not self.attention_in_graph:
                # Not used in the forward pass: its gradient comes from the estimator only
                self.masks[name].attention.requires_grad_(False)
        self.learner.attach()

    def own_gradients_from_forward(self) -> bool:
        """With equation 1 (``scale_output``) the attentions are in the forward pass."""
        return self.scales_output

    def parameters(self) -> list[nn.Parameter]:
        return [self.masks[name].attention for name in self.layers]

    def optimizers(self) -> list[torch.optim.Optimizer]:
        assert self.learner.optimizer is not None
        return [self.learner.optimizer]

    def decayed_parameters(self) -> list[nn.Parameter]:
        if self.config.weight_decay is None:
            return []
        return [dense_weight(module) for module in self.layers.values()]

    def attentions(self) -> dict[str, float]:
        return {name: float(self.masks[name].attention.detach()) for name in self.layers}

    # ------------------------------------------------------------------ contract: the split
    def attention_vector(self) -> Tensor:
        """The layers' attentions as one tensor (differentiable), in layer order."""
        return torch.stack([self.masks[name].attention for name in self.layers]).float()

    def raw_density(self, attention: Tensor) -> Tensor:
        """1 - p(a) per layer, times the prior's factor."""
        return raw_densities(attention, self.config.alpha, self.config.ratio_cap,
                             self.prior if self.allocator.uses_prior() else None)

    def density_vector(self, attention: Tensor | None = None) -> Tensor:
        """Per-layer kept fraction now, differentiable in the attentions: the allocator's
        densities from the raw ones (equation 2)."""
        return self.allocator.densities(
            self.raw_density(self.attention_vector() if attention is None else attention))

    def regularizer(self) -> Tensor | float:
        return 0.0 if self.frozen else self.allocator.regularizer()

    def _numel(self, like: Tensor) -> Tensor:
        if self.numel_vector.device != like.device:
            self.numel_vector = self.numel_vector.to(like.device)
        return self.numel_vector

    def layer_densities(self) -> dict[str, float]:
        with torch.no_grad():
            densities = self.density_vector().tolist()
        return dict(zip(self.layers, densities))

    def layer_counts(self) -> dict[str, int]:
        """The densities' counts, each at least the layer's minimum count."""
        return {name: max(self.min_counts[name], keep_count(self.numels[name], density))
                for name, density in self.layer_densities().items()}

    def scores(self, name: str, module: nn.Module) -> Tensor:
        """``|weight|``, on a CPU written into a buffer kept per layer: there a fresh
        allocation of a large layer's size on every step costs as much as the comparison."""
        weight = dense_weight(module).detach()
        if weight.device.type != "cpu":  # a caching allocator makes the copy cheap there
            return weight.abs()
        buffer = self._magnitudes.get(name)
        if buffer is None or buffer.shape != weight.shape or buffer.dtype != weight.dtype \
                or buffer.device != weight.device:
            buffer = self._magnitudes[name] = torch.empty_like(weight)
        return torch.abs(weight, out=buffer)

    def approximate_masks(self) -> bool:
        """During the ramp (unless ``exact_masks``): the sampled threshold."""
        return not (self.config.exact_masks or self.schedule.done(self.step_count))

    def update_masks(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """The base's mask update at the split's counts, with three additions: between two
        counted updates (every ``count_interval`` steps) the moved weights are re-thresholded
        at each layer's last threshold; the prior is refreshed first when due; the
        estimator's bands are refreshed after it at the start of each attention interval.
        Nothing changes once the masks are frozen."""
        if self.frozen:
            return
        exact = not self.approximate_masks()
        bands = self.estimator is not None and self.estimator.bands_due(self.learner)
        prior = self.allocator.prior_due(exact)
        if not (exact or bands or prior or not self.layer_masks.ready()
                or self.count_timing.due(self.step_count)):
            with torch.no_grad():  # the weights moved: the same thresholds, new masks
                for name, module in self.layers.items():
                    self.layer_masks.rethreshold(name, self.masks[name].mask,
                                                 self.scores(name, module))
            return
        if prior:
            self.allocator.refresh_prior()
        super().update_masks(optimizer)
        if bands:
            assert self.estimator is not None
            self.estimator.set_bands(self)

    # ------------------------------------------------------------------ contract: gradients
    def after_backward(self) -> None:
        """The estimator's statistic on every mask-update step, turned into an attention
        gradient every ``attention_interval`` steps; equation 3's decay as a gradient."""
        self.learner.observe()
        if self.config.weight_decay:  # equation 3: lambda * sum(w_hat^2), as a gradient
            with torch.no_grad():
                for module in self.layers.values():
                    weight = dense_weight(module)
                    if weight.grad is not None:
                        weight.grad.add_(module.weight, alpha=2 * self.config.weight_decay)

    def step(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Attention step, clip to [floor, 1], the allocator's adjustment, then the base's
        step (masks when due; once frozen, the step count only); when the freeze is due
        (the allocator's ``freezes``, at the end of the ramp), exact masks at the target,
        then masks and attentions stay fixed."""
        if self.learner.step():
            with torch.no_grad():
                self.allocator.after_attention_step()
        super().step(optimizer)
        if not self.frozen and self.freeze.due(self.step_count):
            self.update_masks()  # exact: the schedule is done
            self.frozen = True
            self.zero_grad()
            log.debug("masks and attentions frozen at step %d", self.step_count)

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
        blank = BandEstimator.blank_state(len(self.layers)) if self.estimator is None else {}
        return {**super().state_dict(), **self.learner.state_dict(), **blank, "frozen": self.frozen,
                "prior": self.prior.tolist(), **self.layer_masks.state_dict()}

    def _load(self, state: dict[str, Any]) -> None:
        super()._load(state)
        self.learner.load_state_dict(state)
        self.frozen = bool(state.get("frozen", False))
        self.allocator.load_prior(state.get("prior"))
        self.layer_masks.load_state_dict(
            state, {name: dense_weight(m).device for name, m in self.layers.items()})
