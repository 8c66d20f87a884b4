"""The paper variant, ``aswl_paper``: equations 1-3 as published (He, Shi & Dong 2021).

Outputs are scaled by the attentions (equation 1), the pruning ratios are
p_l = min((1 - a_l)^alpha, 0.99) (equation 2), and the attentions are regularised by
gamma * (S(A) - r)^2 with S the global kept fraction (equation 3, with lambda * sum(w_hat^2)
on the sparse weights, added to the gradients in ``after_backward``: same gradient,
2 lambda w_hat, without building a graph for it). SGD with momentum on the attentions, exact
masks every step; ``target_sparsity`` is not enforced (the sparsity follows alpha and gamma).
The allocator is the plain one (:class:`~aswl.methods.aswl.allocators.PaperAllocator`).
"""

from __future__ import annotations

from aswl.methods.aswl.allocators import PaperAllocator
from aswl.methods.aswl.common import ASWLBase
from aswl.methods.aswl.config import ASWLPaperConfig
from aswl.methods.base import register_method


@register_method("aswl_paper")
class ASWLPaper(ASWLBase):
    """ASWL as published; see the module docstring. ``estimator='loss_aware'`` adds the
    target variant's band estimate to the attentions' gradient."""

    config_class = ASWLPaperConfig
    config: ASWLPaperConfig
    allocator_class = PaperAllocator
    scales_output_default = True
    attention_in_graph = True

    @property
    def loss_aware(self) -> bool:  # type: ignore[override]
        return self.config.estimator == "loss_aware"
