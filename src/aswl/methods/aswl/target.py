"""The target variant, ``aswl`` (the default): exactly ``target_sparsity``, a learned split.

The cubic ramp sets the budget; each layer's raw density 1 - p(a_l), times its LAMP density
at that budget (``prior='lamp'``), is projected onto the budget by one shared scale, so the
model has exactly the target at every step, and the attentions learn the split (a
correction to LAMP's) from the loss-aware band estimate
(:mod:`aswl.methods.aswl.estimator`). When the ramp ends, the masks are set exactly at the
target and then frozen with the attentions. All of it is the allocator
(:class:`~aswl.methods.aswl.allocators.BudgetAllocator`).
"""

from __future__ import annotations

from aswl.methods.aswl.allocators import BudgetAllocator
from aswl.methods.aswl.common import ASWLBase
from aswl.methods.aswl.config import ASWLConfig
from aswl.methods.base import register_method


@register_method("aswl")
class ASWL(ASWLBase):
    """ASWL, target variant (He, Shi & Dong 2021, arXiv 2111.02399, with a target budget);
    see the module docstring and :mod:`aswl.methods.aswl`."""

    config_class = ASWLConfig
    config: ASWLConfig
    allocator_class = BudgetAllocator
    min_kept_is_rows = True
    units_before_batchnorm = True
