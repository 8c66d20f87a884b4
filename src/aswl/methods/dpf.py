"""Dynamic Model Pruning with Feedback (Lin et al. 2020): ASWL without the attentions."""

from __future__ import annotations

from dataclasses import dataclass

from aswl.methods.base import GradualConfig, SparseMethod, register_method


@dataclass
class DPFConfig(GradualConfig):
    mask_interval: int = 16
    """Recompute masks every this many steps (DPF's reparametrisation period)."""


@register_method("dpf")
class DPF(SparseMethod):
    """DPF: Lin, Stich, Barba, Dmitriev & Jaggi, "Dynamic Model Pruning with Feedback",
    ICLR 2020.

    The forward pass uses the pruned weights ``w * m``; the gradient found there updates the
    dense weights unchanged (straight-through, the paper's error feedback), so pruned weights
    keep learning and may return. Every ``mask_interval`` steps (16 in the paper) each layer
    keeps its largest dense magnitudes at the uniform sparsity of the cubic schedule. This is
    exactly the shared base with its defaults, i.e. ASWL with neither attentions nor learned
    per-layer ratios: the ablation that isolates what the attentions add.
    """

    config_class = DPFConfig
    straight_through = True
