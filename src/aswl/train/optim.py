"""The weight optimiser (the method's own parameters kept out) and the learning-rate schedule."""

from __future__ import annotations

import math

import torch

from aswl.config import Config
from aswl.methods import SparseMethod


def build_optimizer(config: Config, method: SparseMethod) -> torch.optim.Optimizer:
    handled = {id(p) for p in method.decayed_parameters()}
    params = method.weight_parameters()
    groups = [
        {"params": [p for p in params if id(p) not in handled],
         "weight_decay": config.weight_decay},
        {"params": [p for p in params if id(p) in handled], "weight_decay": 0.0},
    ]
    groups = [g for g in groups if g["params"]]
    if config.optimizer == "sgd":
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum,
                               nesterov=config.nesterov and config.momentum > 0)
    if config.optimizer == "adam":
        return torch.optim.Adam(groups, lr=config.lr)
    return torch.optim.AdamW(groups, lr=config.lr)


def lr_factor(config: Config, step: int, total: int, per_epoch: int) -> float:
    """Learning-rate multiplier at ``step``: linear warm-up, then the chosen schedule."""
    warmup = int(config.warmup_epochs * per_epoch)
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    if config.lr_schedule == "cosine":
        return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))
    if config.lr_schedule == "step":
        return config.lr_gamma ** sum(progress >= m for m in config.lr_milestones)
    return 1.0
