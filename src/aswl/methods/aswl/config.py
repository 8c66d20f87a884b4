"""The options of the two ASWL variants: the fields both use, and each variant's own."""

from __future__ import annotations

import math
from dataclasses import dataclass

from aswl.methods.base import GradualConfig, check
from aswl.methods.method_config import MAX_COEFFICIENT, MAX_INTERVAL

ATTENTION_MIN = 0.01
"""Lowest attention (the paper's clip)."""
ATTENTION_UPDATES = 512
"""Attention updates over the ramp when ``attention_interval`` is None (channel mode takes a
quarter of them: each of its updates averages several observed backward passes)."""
MAX_ATTENTION_LR = 10.0
"""Largest ``attention_lr``. The attentions live in [0.01, 1] and the defaults are 0.005 to
0.02; one Adam step moves an attention by about the learning rate, so a rate near 1 already
throws it across its whole range (10 leaves room for SGD on small gradients)."""
MAX_ALPHA = 100.0
"""Largest ``alpha`` (the pruning exponent, default 1): at 100 even the lowest attention
prunes only 1 - 0.99^100 ~ 37% of a layer, so a larger one can only be a slip."""


@dataclass
class AttentionFields:
    """The fields of every attention-based config (weight and channel ASWL); a config that
    mixes them in calls :meth:`check_attention` from its ``validate``."""

    attention_interval: int | None = None
    """The attentions take one optimiser step every this many steps, from the estimator's
    statistic accumulated over the steps in between. None: about 512 steps over the ramp (a
    multiple of mask_interval; 128 in channel mode), so a short run learns its split as
    fully as a long one."""
    alpha: float = 1.0
    """Pruning factor: p = (1 - a)^alpha (at most 100)."""
    init_attention: float = 0.5
    """Starting attention."""
    attention_lr: float = 0.01
    """Learning rate of the attentions' own optimiser (at most 10)."""
    attention_optimizer: str = "adam"
    """``sgd`` (momentum ``attention_momentum``, as the authors) or ``adam``."""
    attention_momentum: float = 0.9
    """Momentum of the attentions' SGD (attention_optimizer = sgd), in [0, 1)."""

    def check_attention(self) -> None:
        """alpha, init_attention, attention_lr, attention_momentum, attention_interval and
        attention_optimizer in range."""
        alpha, init, lr = self.alpha, self.init_attention, self.attention_lr
        momentum = self.attention_momentum
        check(math.isfinite(alpha) and 0 < alpha <= MAX_ALPHA, "alpha", alpha,
              "a number in (0, 100]")
        check(ATTENTION_MIN <= init <= 1.0, "init_attention", init, "a number in [0.01, 1]")
        check(math.isfinite(lr) and 0 <= lr <= MAX_ATTENTION_LR, "attention_lr", lr,
              "a number in [0, 10]")
        check(math.isfinite(momentum) and 0 <= momentum < 1, "attention_momentum", momentum,
              "a number in [0, 1)")
        check(self.attention_interval is None or 1 <= self.attention_interval <= MAX_INTERVAL,
              "attention_interval", self.attention_interval, "null or an integer in [1, 10**6]")
        check(self.attention_optimizer in ("sgd", "adam"), "attention_optimizer",
              self.attention_optimizer, "'sgd' or 'adam'")


@dataclass
class ASWLCommonConfig(GradualConfig, AttentionFields):
    """Fields of both variants."""

    mask_interval: int = 1
    """Masks are recomputed every this many steps. Between the start and the end of the ramp
    the kept count comes from a threshold read off a fixed sample of each layer's magnitudes
    (``exact_masks=false``), which costs about as much as applying the mask once."""
    scale_output: bool | None = None
    """Equation 1 (each layer's output times its attention). None: the variant's default (on
    for the paper variant, off for target, which keeps the output scale)."""
    weight_decay: float | None = None
    """Equation 3's lambda: a number adds lambda * sum(w_hat^2) on the *sparse* weights of the
    pruned layers (gradient 2 lambda w_hat; 2.5e-4 matches an optimiser weight decay of 5e-4),
    as published. None: the optimiser's weight decay acts on the dense weights, pruned ones
    included."""
    max_ratio: float | None = None
    """Cap on every layer's pruning ratio. None: the variant's default (0.99 for the paper
    variant, the authors' cap; no cap for target, where ``min_kept`` protects small layers)."""
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

    default_cap = 1.0
    """``max_ratio`` when it is None (a class constant, not a field)."""

    def validate(self) -> None:
        super().validate()
        self.check_attention()
        check(1 <= self.count_interval <= MAX_INTERVAL, "count_interval", self.count_interval,
              "an integer in [1, 10**6]")
        check(self.weight_decay is None or 0 <= self.weight_decay <= MAX_COEFFICIENT,
              "weight_decay", self.weight_decay, "null or a number in [0, 1000]")
        check(self.max_ratio is None or 0.0 < self.max_ratio <= 1.0, "max_ratio",
              self.max_ratio, "null or a number in (0, 1]")
        check(self.min_kept is None or self.min_kept >= 1, "min_kept", self.min_kept,
              "null or an integer >= 1")
        check(0.0 < self.band <= 0.5, "band", self.band, "a fraction in (0, 0.5]")

    @property
    def ratio_cap(self) -> float:
        """The cap in force: ``max_ratio``, or the variant's default."""
        return self.default_cap if self.max_ratio is None else self.max_ratio


@dataclass
class ASWLConfig(ASWLCommonConfig):
    """The target variant (``aswl``): exactly ``target_sparsity``, a learned split."""

    prior: str = "lamp"
    """The split the attentions correct. ``lamp``: each layer's raw density is its attention
    times its LAMP density at the current budget, recomputed from the dense weights every
    ``attention_interval`` steps (at most 32) and at exact mask updates, so equal attentions
    give LAMP's split (Lee et al. 2021; estimated from a sample of at most 4,096 weights per
    layer) and the attentions learn a correction to it. ``uniform``: no factor (every
    attention starts at init_attention)."""
    freeze_after_ramp: bool = True
    """When the ramp ends, set exact masks at the target, then keep masks and attentions
    fixed, so the rest of training fine-tunes exactly the model that is exported."""

    def validate(self) -> None:
        super().validate()
        check(self.prior in ("lamp", "uniform"), "prior", self.prior, "'lamp' or 'uniform'")
        check(self.target_sparsity <= self.ratio_cap, "target_sparsity",
              self.target_sparsity, f"at most max_ratio = {self.ratio_cap}")


@dataclass
class ASWLPaperConfig(ASWLCommonConfig):
    """The paper variant (``aswl_paper``): equations 1-3, the authors' optimiser."""

    weight_decay: float | None = 2.5e-4
    attention_optimizer: str = "sgd"
    attention_lr: float = 0.005
    attention_interval: int | None = 1
    exact_masks: bool = True
    gamma: float = 0.1
    """Attention decay: weight of the sparsity regulariser gamma * (S(A) - r)^2."""
    density_target: float = 0.0
    """r in phi = (S - r)^2: the global kept fraction the regulariser pulls towards."""
    estimator: str = "paper"
    """``paper`` (the attentions' gradient from equation 1 and phi only) or ``loss_aware``
    (adds the target variant's band estimate, :mod:`aswl.methods.aswl.estimator`)."""

    default_cap = 0.99

    def validate(self) -> None:
        super().validate()
        check(0 <= self.gamma <= MAX_COEFFICIENT, "gamma", self.gamma, "a number in [0, 1000]")
        check(0.0 <= self.density_target <= 1.0, "density_target", self.density_target,
              "a fraction in [0, 1]")
        check(self.estimator in ("paper", "loss_aware"), "estimator", self.estimator,
              "'paper' or 'loss_aware'")

