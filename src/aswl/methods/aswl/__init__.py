"""ASWL: attention-based simultaneous sparse structure and weight learning.

He, Shi & Dong, "Learning Pruned Structure and Weights Simultaneously from Scratch: an
Attention based Approach", arXiv 2111.02399 (2021). Each prunable layer l has a learned scalar
attention a_l in [0.01, 1] that

1. scales the layer's output, f(x) = a_l * f_l(x; w_l * m_l)           (``scale_output``)
2. sets its pruning ratio, p_l = (1 - a_l)^alpha (capped at 0.99 in the paper variant)
3. is regularised, gamma * (S(A) - r)^2 with S the global kept fraction (paper variant).

Dense and sparse weights are both tracked (straight-through), masks are recomputed from the
dense magnitudes. Two variants, both with per-layer ratios from the attentions, two small
classes on one shared base, each naming its allocator:

* ``aswl`` (:class:`ASWL`, the default, :mod:`.target`): the user asks for a global
  sparsity; a cubic ramp sets the budget; raw densities 1 - p_l, times each layer's LAMP
  density at that budget, are projected onto the budget by one shared scale, so the final
  model has exactly the target, and the attentions learn the split (a correction to LAMP's)
  from a loss-aware estimate of each layer's marginal loss (:mod:`.estimator`).
* ``aswl_paper`` (:class:`ASWLPaper`, :mod:`.paper`): the equations as published. Gradient
  to a_l from equation 1 and the regulariser.

The variants differ in their allocator only (:mod:`.allocators`: attentions' raw densities to
kept fractions). The rooms: :mod:`.allocation` (stateless: attentions to densities, the
projection onto the budget through :func:`aswl.sparse.budget.fit_budget`'s solver, the
floor), :mod:`.allocators` (the paper's and the target's), :mod:`.estimator` (the band
statistic), :mod:`.channel_estimator` (channel mode's Fisher saliency), :mod:`.learner` (the
attention learner of both granularities: optimiser, timing, step; the estimator a plug),
:mod:`.common` (the attentions and the masks), :mod:`.config` (the
options).
"""

from aswl.methods.aswl.allocation import project_to_budget
from aswl.methods.aswl.common import ASWLBase, attach_attention, remove_output_scaling
from aswl.methods.aswl.config import ASWLCommonConfig, ASWLConfig, ASWLPaperConfig
from aswl.methods.aswl.estimator import BandEstimator
from aswl.methods.aswl.paper import ASWLPaper
from aswl.methods.aswl.target import ASWL

__all__ = ["ASWL", "ASWLBase", "ASWLCommonConfig", "ASWLConfig", "ASWLPaper",
           "ASWLPaperConfig", "BandEstimator", "attach_attention", "project_to_budget",
           "remove_output_scaling"]
