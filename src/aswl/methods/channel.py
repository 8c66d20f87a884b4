"""Channel granularity: methods that remove whole channels, so the export is a thinner,
faster dense model (``structure='channel'``).

Every method here keeps one boolean mask per coupled channel group
(:mod:`aswl.sparse.channels`), ramps the removed cost (``budget``: parameters or FLOPs of the
Conv/Linear layers) along the same schedule as the weight-level methods, ranks the channels of
a group by a score, freezes the masks when the ramp ends and exports a slimmed model. They
differ in how many channels each group keeps and in the score:

* :class:`UniformChannels` (``l1_filter``): every group keeps the same fraction, filters
  ranked by the L1 norm of their weights (Li et al. 2017, "Pruning Filters for Efficient
  ConvNets"), the fraction chosen so the budget is met;
* :class:`NetworkSlimming` (``slimming``): L1 penalty on the BatchNorm scales during training,
  one global threshold on |gamma| (Liu et al. 2017, "Learning Efficient Convolutional Networks
  through Network Slimming");
* :class:`GroupNormChannels` (``group_norm``): one global threshold on the L2 norm of all the
  weights coupled to a channel, normalised by its group's mean (the group-norm importance of
  Fang et al. 2023, "DepGraph");
* ASWL's channel variant lives in :mod:`aswl.methods.channel_aswl`.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from aswl.methods.base import ConfigError, GradualConfig, SparseMethod, check, register_method
from aswl.methods.guards import warn_user
from aswl.methods.method_config import MAX_COEFFICIENT
from aswl.sparse import channel_cost
from aswl.sparse import channels as masks
from aswl.sparse.channel_graph import LAYER_TYPES, ChannelGroup, find_groups

log = logging.getLogger(__name__)


@dataclass
class ChannelConfig(GradualConfig):
    target_sparsity: float = 0.5
    """Fraction of the budget's cost removed (0.5: half the FLOPs, a 2x reduction; with
    ``budget: latency``, half the measured time of the Conv/Linear layers: 2x as fast)."""
    budget: str = "flops"
    """``flops`` (multiply-accumulates of the Conv/Linear layers), ``params``, or
    ``latency`` (their time measured on this machine, :mod:`aswl.sparse.latency`)."""
    latency_batch: int | None = None
    """``budget: latency``: the deployment batch the layers are timed at (None: the
    example input's)."""
    latency_table: str | None = None
    """``budget: latency``: a table file (``aswl profile``; may be made on the target device);
    None: the cache (``~/.cache/aswl``, measured on first use)."""
    mask_interval: int = 16
    """Channel masks are recomputed every this many optimiser steps during the ramp."""

    def validate(self) -> None:
        super().validate()
        check(self.budget in ("flops", "params", "latency"), "budget", self.budget,
              "'flops', 'params' or 'latency'")
        check(self.latency_batch is None or (isinstance(self.latency_batch, int)
                                             and 1 <= self.latency_batch <= 1 << 16),
              "latency_batch", self.latency_batch, "null or an integer in [1, 65536]")


class ChannelMethod(SparseMethod):
    """Shared machinery of the channel methods (see the module docstring).

    ``example_inputs``: a batch the model accepts (its channel dependencies are traced on it).
    """

    config_class = ChannelConfig
    config: ChannelConfig
    straight_through = False
    """Masked channels get no gradient. Straight-through (True) lets their weights follow the
    gradient they would get if restored, but with no activation after the mask (LeNet-5's
    convs) that gradient has no feedback: their weights drift, the norm scores bring them
    back large, and training diverged (LeNet-5, lr 0.05, l1_filter and aswl)."""

    def __init__(self, model: nn.Module, config: ChannelConfig | None = None,
                 total_steps: int | None = None, example_inputs: Any = None,
                 **overrides: Any) -> None:
        super().__init__(model, config, total_steps, **overrides)
        if example_inputs is None:
            raise ConfigError(f"{self.name}: structure = 'channel' needs example_inputs (a "
                              "batch the model accepts, e.g. torch.zeros(1, *input_shape)) to "
                              "trace which channels are coupled")
        self.example_inputs = example_inputs
        # channels are a Conv/Linear notion: other prunable tensors (attention projections,
        # embeddings) stay dense in this mode
        self.layers = {n: m for n, m in self.layers.items() if isinstance(m, LAYER_TYPES)}
        self.numels = {n: self.numels[n] for n in self.layers}
        self.total_numel = sum(self.numels.values())
        self.refused: dict[str, str] = {}
        """Channel groups kept whole, and why (:func:`aswl.sparse.channel_graph.find_groups`)."""
        groups = find_groups(model, example_inputs, self.layers, self.refused)
        unsafe = masks.zero_probe(model, example_inputs, groups)
        if unsafe:
            log.info("channel mode keeps %d more group(s) whole: %s", len(unsafe),
                     "; ".join(f"{g}: {why}" for g, why in unsafe.items()))
            self.refused.update(unsafe)
            groups = [g for g in groups if g.name not in unsafe]
            if not groups:
                raise ConfigError(f"{self.name}: no channel group can be pruned safely: "
                                  f"{'; '.join(f'{g}: {w}' for g, w in unsafe.items())[:400]}")
        self.groups = groups
        self.sizes = torch.tensor([float(g.size) for g in self.groups], dtype=torch.float64)
        self.cost = budget_cost(self, model, example_inputs)
        self.channel_masks: dict[str, Tensor] = {}
        self.hooks: dict[str, list[masks.ChannelMaskHook]] = {}
        self.frozen = False
        self._warn_unreachable_channels()

    def warn_unreachable(self) -> None:
        """The base's check counts weights; channel mode checks its cost once its groups are
        known (:meth:`_warn_unreachable_channels`)."""

    def _warn_unreachable_channels(self) -> None:
        """Every group keeps at least one channel (one block of a grouped conv), and the
        groups kept whole keep all of theirs: say so when that caps the cut."""
        lower = torch.tensor([g.unit for g in self.groups], dtype=torch.float64) / self.sizes
        reachable = 1.0 - float(self.cost.kept(lower)) / self.cost.total
        target = self.config.target_sparsity
        if target > reachable + 1e-9:
            warn_user(f"{self.name}: target_sparsity {target:.1%} cannot be reached: with one "
                      f"channel per group and the {len(self.refused)} group(s) kept whole, at "
                      f"most {reachable:.1%} of the {self.config.budget} can go")

    # ----------------------------------------------------------------- the channel engine
    def _check_free(self) -> None:
        if masks.has_channel_hooks(self.model):
            raise ConfigError("the model already carries channel masks: attach one method per "
                              "model")

    def _attach(self) -> None:
        """One boolean mask per group, multiplied in at its mask points."""
        for group in self.groups:
            device = self.model.get_submodule(group.producers[0]).weight.device
            mask = torch.ones(group.size, dtype=torch.bool, device=device)
            self.channel_masks[group.name] = mask
            self.hooks[group.name] = [
                masks.add_channel_hook(self.model, mask, point, self.straight_through)
                for point in group.mask_points]

    def _detach(self) -> None:
        masks.remove_channel_hooks(self.model)
        self.channel_masks.clear()
        self.hooks.clear()

    def mask_state(self) -> dict[str, Tensor]:
        return dict(self.channel_masks)

    def step(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """The base's step (count, masks when due), then the freeze at the ramp's end."""
        if self.frozen:
            self.step_count += 1
            return
        super().step(optimizer)
        if self.schedule.done(self.step_count):
            self._freeze()

    def _finalize(self) -> None:
        self.step_count = max(self.step_count, self.total_steps)
        if not self.frozen:
            self._freeze()

    def _freeze(self) -> None:
        """End of the ramp: final masks, then the structure stays fixed (fine-tuning)."""
        self.update_masks()
        self.frozen = True
        for hooks in self.hooks.values():
            for hook in hooks:
                hook.observe = None

    # ----------------------------------------------------------------- what methods choose
    def scores(self, name: str, group: ChannelGroup) -> Tensor:  # type: ignore[override]
        """Which channels to keep: one score per channel of group ``name`` (largest win),
        the channel-mode form of the base's hook. Default: L2 norm of the channel's
        producer weights and normalisation scales."""
        return self._norms(group, sides=("out",), power=2)

    def group_densities(self) -> Tensor:
        """Raw kept fraction of each group before the budget's shared scale. Default: equal."""
        return torch.ones(len(self.groups), dtype=torch.float64)

    def global_scope(self) -> bool:
        """True: one threshold on all groups' scores instead of :meth:`group_densities`
        (the base's hook, over channels)."""
        return False

    def channel_scores(self) -> list[Tensor]:
        """Every group's :meth:`scores`, in group order (machinery, not a hook)."""
        return [self.scores(group.name, group) for group in self.groups]

    # ----------------------------------------------------------------- machinery
    def _norms(self, group: ChannelGroup, sides: tuple[str, ...], power: int) -> Tensor:
        """Per channel, the norm of the group's weights on ``sides`` (:func:`channel_norms`)."""
        return channel_norms(self.model, group, sides, power)

    def _kept_target(self) -> float:
        return (1.0 - self.sparsity_now()) * self.cost.total

    def channel_counts(self, scores: list[Tensor]) -> list[int]:
        units = [g.unit for g in self.groups]
        multiple = self.cost.multiple  # budget latency: counts where its table was measured
        kept = self._kept_target()
        steps = max(units) > 1 or multiple > 1  # counts move in steps, not channel by channel
        blocks = torch.tensor(units, dtype=torch.float64)
        cost = channel_cost.UnitCost(self.cost, self.sizes, blocks) if max(units) > 1 else self.cost
        if self.global_scope():
            counts = channel_cost.threshold_budget(scores, units, self.cost, kept)
            # whole blocks: down to a multiple, so the threshold's cost stays under the budget
            counts = [u * max(1, c // u) for u, c in zip(units, counts)]
            order = channel_cost.best_next(scores)
        else:
            raw = self.group_densities().double().clamp_min(1e-12)
            # counts in steps: the last step at or under the budget's cost
            density = channel_cost.fit_budget(raw, blocks / self.sizes, cost, kept, at_most=steps)
            counts = [float(d) * g.size for g, d in zip(self.groups, density)]
            order = channel_cost.furthest_below(raw, self.sizes)
        # groups of whole blocks are counted in blocks already (UnitCost, the floor above);
        # the others round to the cost's multiple (round_count), at least one channel
        counts = [int(round(c)) if u > 1 else
                  channel_cost.round_count(max(1, min(g.size, int(round(c)))), g.size, multiple)
                  for g, u, c in zip(self.groups, units, counts)]
        if steps:  # one scale or one threshold stops a step short of the budget
            counts = channel_cost.fill_slack(cost, counts, self.sizes, units, multiple, kept,
                                             order)
        return counts

    def update_masks(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """Each group's ``channel_counts`` best channels by :meth:`channel_scores` (the
        grouped-conv constraints kept, :meth:`ChannelGroup.mask`)."""
        if self.frozen:
            return
        scores = self.channel_scores()
        counts = self.channel_counts(scores)
        for group, score, keep in zip(self.groups, scores, counts):
            mask = self.channel_masks[group.name]
            mask.copy_(group.mask(score, keep).to(mask.device))
            for hook in self.hooks[group.name]:
                hook.dense = keep == group.size

    def dense_weights(self) -> dict[str, nn.Parameter]:
        return {name: module.weight for name, module in self.layers.items()}

    def densities(self) -> Tensor:
        return torch.stack([m.double().mean().cpu() for m in self.channel_masks.values()])

    def global_sparsity(self) -> float:
        """Fraction of the budget's cost (FLOPs or parameters) removed now."""
        return 1.0 - float(self.cost.kept(self.densities())) / self.cost.total

    def layer_report(self) -> list[dict[str, Any]]:
        fractions = self.cost.fractions(self.densities())
        rows = []
        for i, name in enumerate(self.layers):
            kept = float(fractions[i])
            numel = self.numels[name]
            rows.append({"name": name, "numel": numel, "nonzero": int(round(kept * numel)),
                         "sparsity": 1.0 - kept, "attention": self.attentions().get(name)})
        return rows

    def removed_channels(self) -> dict[str, Tensor]:
        return {name: (~mask).nonzero().reshape(-1).cpu()
                for name, mask in self.channel_masks.items()}

    def export_metadata(self) -> dict[str, str]:
        return masks.slim_record(self.example_inputs, self.removed_channels())

    def export(self) -> nn.Module:
        """A thinner plain copy: the masked channels removed from every coupled layer.

        The base's export (a copy; NaN or infinite weights refused), slimmed, then checked:
        on the example inputs the slimmed model must compute what the masked one does
        (:func:`aswl.sparse.channels.check_slim`), or nothing is returned."""
        plain = masks.slim(super().export(), self.example_inputs, self.removed_channels(),
                     in_place=True)
        masks.check_slim(self.model, plain, self.example_inputs)
        return plain

    def state_dict(self) -> dict[str, Any]:
        table = getattr(self.cost, "table", None)  # budget latency: resume with the same times
        return {**super().state_dict(), "frozen": self.frozen,
                "channel_masks": {k: v.cpu().tolist() for k, v in self.channel_masks.items()},
                **({"latency_table": table.to_state()} if table is not None else {})}

    def _load(self, state: dict[str, Any]) -> None:
        super()._load(state)
        self.frozen = bool(state["frozen"])
        if "latency_table" in state and hasattr(self.cost, "table"):
            from aswl.sparse.latency import saved_latency_cost

            self.cost = saved_latency_cost(self.cost, state["latency_table"], self.sizes)
        for name, values in state["channel_masks"].items():
            if name not in self.channel_masks:
                raise KeyError(f"channel group {name!r} is not in this model")
            self.channel_masks[name].copy_(torch.tensor(values, dtype=torch.bool))
            for hook in self.hooks[name]:
                hook.dense = bool(self.channel_masks[name].all())

    def detach(self) -> None:
        """Remove the channel hooks from the model (it computes densely again)."""
        self._detach()


def budget_cost(method: ChannelMethod, model: nn.Module,
                example_inputs: Any) -> channel_cost.CostModel:
    """The cost ``method.config.budget`` counts over the method's groups (FLOPs, parameters,
    or the measured latency table, :mod:`aswl.sparse.latency`)."""
    budget = method.config.budget
    costs = channel_cost.layer_costs(model, list(method.layers), example_inputs,
                                     "flops" if budget == "latency" else budget)
    cost = channel_cost.cost_model(method.groups, costs, model)
    if budget != "latency":
        return cost
    grouped = [g.name for g in method.groups if g.unit > 1]
    if grouped:
        raise ConfigError(f"{method.name}: budget = 'latency' does not time grouped "
                          f"convolutions at their kept widths yet (groups {grouped[:4]}); "
                          "use budget = 'flops' or 'params' for this model")
    from aswl.sparse.latency import latency_cost

    return latency_cost(cost, method.sizes, model, list(method.layers), example_inputs,
                        method.config.latency_batch, method.config.latency_table)


def channel_norms(model: nn.Module, group: ChannelGroup, sides: tuple[str, ...],
                  power: int) -> Tensor:
    """Per channel of ``group``, (sum of |w|^power)^(1/power) over its slices on ``sides``
    ('out': the producers' rows, biases and normalisation scales; 'in': the readers'
    columns, block by block for a grouped conv)."""
    total = torch.zeros(group.size, dtype=torch.float64)
    with torch.no_grad():
        for name, side, index, root in group.slices:
            module = model.get_submodule(name)
            if side not in sides or getattr(module, "weight", None) is None:
                continue
            weight = module.weight.detach()
            if isinstance(module, nn.modules.conv._ConvTransposeNd):
                weight = weight.transpose(0, 1)  # (in, out/groups, ...) -> (out, in, ...)
            if side == "out":
                values = weight.abs().pow(power).reshape(weight.shape[0], -1).sum(1)
                bias = getattr(module, "bias", None)
                if bias is not None:
                    values = values + bias.detach().abs().pow(power)
            else:
                if weight.dim() < 2:
                    continue
                blocks = getattr(module, "groups", 1)
                values = weight.abs().pow(power).reshape(
                    blocks, weight.shape[0] // blocks, weight.shape[1], -1).sum((1, 3))
                values = values.reshape(-1)
            total.index_add_(0, root, values.double().cpu()[index])
    return total.pow(1.0 / power)


@register_method("l1_filter", structure="channel")
class UniformChannels(ChannelMethod):
    """Uniform L1-norm filter pruning (Li et al. 2017): the same kept fraction in every
    group, filters ranked by the L1 norm of their weights."""

    def scores(self, name: str, group: ChannelGroup) -> Tensor:  # type: ignore[override]
        return self._norms(group, sides=("out",), power=1)


@dataclass
class SlimmingConfig(ChannelConfig):
    sparsity_penalty: float = 1e-4
    """lambda of the L1 penalty on the BatchNorm scales (Liu et al. 2017: 1e-4 for VGG, 1e-5
    for ResNets)."""

    def validate(self) -> None:
        super().validate()
        check(0 <= self.sparsity_penalty <= MAX_COEFFICIENT, "sparsity_penalty",
              self.sparsity_penalty, "a number in [0, 1000]")


@register_method("slimming", structure="channel")
class NetworkSlimming(ChannelMethod):
    """Network Slimming (Liu et al. 2017): L1 on the BatchNorm scales while training, one
    global threshold on |gamma| (summed over a group's BatchNorms). Groups without a
    BatchNorm are ranked by their producers' weight norm instead."""

    config_class = SlimmingConfig
    config: SlimmingConfig

    def global_scope(self) -> bool:
        return True

    def _gammas(self) -> list[nn.Parameter]:
        return [self.model.get_submodule(n).weight for g in self.groups for n in g.norms
                if getattr(self.model.get_submodule(n), "weight", None) is not None]

    def after_backward(self) -> None:
        if self.frozen or not self.config.sparsity_penalty:
            return
        with torch.no_grad():
            for gamma in self._gammas():
                if gamma.grad is not None:
                    gamma.grad.add_(gamma.sign(), alpha=self.config.sparsity_penalty)

    def scores(self, name: str, group: ChannelGroup) -> Tensor:  # type: ignore[override]
        if not group.norms:
            return self._norms(group, sides=("out",), power=2)
        total = torch.zeros(group.size, dtype=torch.float64)
        for module, _side, index, root in group.slices:
            gamma = getattr(self.model.get_submodule(module), "weight", None)
            if module in group.norms and gamma is not None:
                total.index_add_(0, root, gamma.detach().abs().double().cpu()[index])
        return total


@register_method("group_norm", structure="channel")
class GroupNormChannels(ChannelMethod):
    """Global group-norm channel pruning (the group importance of DepGraph, Fang et al.
    2023): a channel's score is the L2 norm of every weight coupled to it (producers,
    normalisation, consumers' input columns), divided by its group's mean score; one global
    threshold."""

    def global_scope(self) -> bool:
        return True

    def scores(self, name: str, group: ChannelGroup) -> Tensor:  # type: ignore[override]
        score = self._norms(group, sides=("out", "in"), power=2)
        return score / score.mean().clamp_min(1e-12)

