"""Gradual magnitude pruning (Zhu & Gupta 2017), per layer or with one global threshold."""

from __future__ import annotations

from dataclasses import dataclass

from aswl.methods.base import GradualConfig, register_method
from aswl.methods.magnitude import MagnitudeFamily, ScopedConfig


@dataclass
class GMPConfig(GradualConfig, ScopedConfig):
    """``scope='layer'``: every layer at the scheduled sparsity; ``'global'``: one threshold."""


@register_method("gmp")
class GMP(MagnitudeFamily):
    """Gradual magnitude pruning: Zhu & Gupta, "To prune, or not to prune: exploring the
    efficacy of pruning for model compression", ICLR workshop 2018 (arXiv 1710.01878).

    Sparsity follows the base's ``schedule`` (cubic ramp from ``ramp_begin`` to ``ramp_end``);
    every ``mask_interval`` steps (Zhu & Gupta's delta-t; the default 1 follows the ramp most
    closely) the smallest-magnitude active weights are pruned, per layer (``scope='layer'``,
    uniform sparsity as in the paper) or below one threshold across all layers
    (``scope='global'``). Pruned weights get no gradient and are held at exactly zero.
    """

    config_class = GMPConfig
    config: GMPConfig


@dataclass
class GMPGlobalConfig(GMPConfig):
    scope: str = "global"


@register_method("gmp_global")
class GMPGlobal(GMP):
    """:class:`GMP` with ``scope='global'`` by default: one magnitude threshold for all layers."""

    config_class = GMPGlobalConfig
