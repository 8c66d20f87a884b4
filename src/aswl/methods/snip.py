"""SNIP: single-shot pruning at initialisation by connection sensitivity (Lee et al. 2019)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from aswl.methods.base import MethodConfig, SparseMethod, check, register_method, zero_pruned
from aswl.methods.magnitude import global_keep
from aswl.sparse import dense_weight
from aswl.sparse.schedules import OneShot

log = logging.getLogger(__name__)


@dataclass
class SNIPConfig(MethodConfig):
    snip_batches: int = 1
    """Training steps whose gradients score the connections before the mask is fixed."""

    def validate(self) -> None:
        super().validate()
        check(self.snip_batches >= 1, "snip_batches", self.snip_batches, "an integer >= 1")


@register_method("snip")
class SNIP(SparseMethod):
    """SNIP: Lee, Ajanthan & Torr, "SNIP: Single-shot Network Pruning based on Connection
    Sensitivity", ICLR 2019.

    During the first ``snip_batches`` steps the method sums ``w * g`` per weight (``g`` the
    gradient seen in :meth:`after_backward`; the sum over batches is the gradient of the loss on
    their union, as the paper's D) and removes every model gradient, so the optimiser does not
    move any parameter while scoring (the scores are taken at initialisation, as in the paper).
    Then the sensitivity ``|sum w * g|`` normalised by its total over all layers (the paper's
    ``s_j``; the normalisation does not change the ranking) selects exactly the global top-k,
    every layer keeping at least one weight. The mask is then fixed and the network trained
    sparse: plain masked gradient, pruned weights held at zero.
    """

    config_class = SNIPConfig
    config: SNIPConfig
    straight_through = False
    pin_pruned = True

    def __init__(self, model: nn.Module, config: SNIPConfig | None = None,
                 total_steps: int | None = None, **overrides: Any) -> None:
        super().__init__(model, config, total_steps, **overrides)
        self.fixed = False
        self.sensitivity: dict[str, Tensor] = {}

    def build_schedule(self) -> OneShot:
        """The mask is fixed after the last scoring step."""
        return OneShot(self.config.target_sparsity, self.config.snip_batches)

    def init_masks(self) -> None:
        """Masks are all ones until :meth:`fix_mask`."""

    def update_masks(self, optimizer: torch.optim.Optimizer | None = None) -> None:
        """The one mask update: fix the mask (then frozen)."""
        if not self.fixed:
            self.fix_mask()

    def scoring(self) -> bool:
        return not self.fixed and not self.schedule.done(self.step_count)

    def after_backward(self) -> None:
        if not self.scoring():
            return
        with torch.no_grad():
            for name, module in self.layers.items():
                weight = dense_weight(module)
                if weight.grad is None:
                    continue
                contribution = (weight.detach() * weight.grad).float()
                if name in self.sensitivity:
                    self.sensitivity[name] += contribution
                else:
                    self.sensitivity[name] = contribution
        for param in self.weight_parameters():
            param.grad = None

    def fix_mask(self) -> None:
        """Global top-k of the normalised connection sensitivity; masks frozen from now on."""
        with torch.no_grad():
            scores = {}
            for name, module in self.layers.items():
                if name in self.sensitivity:
                    scores[name] = self.sensitivity[name].abs()
                else:  # no gradient was seen (e.g. finalize before any step): magnitude
                    log.warning("snip: no gradient seen for layer %s; scoring by magnitude",
                                name)
                    scores[name] = dense_weight(module).detach().abs().float()
            total = sum(float(s.sum()) for s in scores.values())
            if total > 0:
                scores = {name: s / total for name, s in scores.items()}
            self.set_masks(scores, global_keep=global_keep(self, self.config.target_sparsity))
        self.fixed = True
        self.sensitivity = {}
        zero_pruned(self)
        log.info("snip: mask fixed at step %d, global sparsity %.4f", self.step_count,
                 self.global_sparsity())

    def _finalize(self) -> None:
        self.step_count = max(self.step_count, self.total_steps)
        if not self.fixed:
            self.fix_mask()
        zero_pruned(self)

    def state_dict(self) -> dict[str, Any]:
        return {**super().state_dict(), "fixed": self.fixed,
                "sensitivity": {k: v.clone() for k, v in self.sensitivity.items()}}

    def _load(self, state: dict[str, Any]) -> None:
        super()._load(state)
        self.fixed = bool(state["fixed"])
        self.sensitivity = {k: v.clone() for k, v in state.get("sensitivity", {}).items()}
