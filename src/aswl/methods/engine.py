"""The mask engine of weight mode: which masks a method's life cycle attaches to the model.

:class:`aswl.methods.base.SparseMethod` runs the life cycle (prepare, step, finalize, state,
export) for both granularities; what differs is only how masks are attached, detached and
read, these methods. :class:`WeightEngine` puts one mask on each prunable weight (a
parametrization, :mod:`aswl.sparse.masked`); channel mode's engine
(:class:`aswl.methods.channel.ChannelMethod`) puts one on each coupled channel group.
"""

from __future__ import annotations

from typing import Any

from torch import Tensor, nn
from torch.nn.utils import parametrize

from aswl.checks import ConfigError
from aswl.sparse import attach_alias, attach_layers, describe_dense, detach_layers


class WeightEngine:
    """One mask per prunable weight tensor (``self.masks``, by layer name)."""

    model: nn.Module
    name: str
    layers: dict[str, nn.Module]
    tied: dict[str, list[str]]
    masks: dict[str, Any]
    straight_through: bool

    def _modules(self) -> dict[str, nn.Module]:
        return {**self.layers, **{alias: self.model.get_submodule(alias)
                                  for aliases in self.tied.values() for alias in aliases}}

    def _check_free(self) -> None:
        """A :class:`ConfigError` if the model carries a method's masks already."""
        taken = [name for name, module in self._modules().items()
                 if parametrize.is_parametrized(module, "weight")]
        if taken:
            raise ConfigError(f"layer(s) {taken} already carry a method's masks: attach one "
                              "method per model (build a fresh model, or use the plain model "
                              "of method.export())")

    def _attach(self) -> None:
        """Attach the masks (all ones) to the model."""
        describe_dense(self.model, self.layers, self.name)
        self.masks = attach_layers(self.layers, self.straight_through)
        for name, aliases in self.tied.items():
            for alias in aliases:
                attach_alias(self.model.get_submodule(alias), self.masks[name])

    def _detach(self) -> None:
        """Undo :meth:`_attach` (a failed prepare leaves the model as it was)."""
        detach_layers(self._modules())
        self.masks = {}

    def mask_state(self) -> dict[str, Tensor]:
        """The current masks by unit name (a layer; a channel group in channel mode)."""
        return {name: masked.mask for name, masked in self.masks.items()}
