"""What a method records and hands out, the same for every method: its state (one checked
``load_state_dict`` calling the ``_load`` hook), the once-only warnings, the report of its
masks and the export (the finite check included). :class:`MethodRecord` is the part of
:class:`aswl.methods.base.SparseMethod` that no method overrides, except ``state_dict`` /
``_load`` (more state), ``export_metadata`` and ``layer_report``."""

from __future__ import annotations

import copy
from typing import Any, ClassVar, final

from torch import nn

from aswl.finite import check_finite as check_finite_weights
from aswl.finite import warn_once
from aswl.methods.guards import MethodStateError, untrained_hint, warn_user
from aswl.sparse import dense_weight, strip_layers


class MethodRecord:
    """State, warnings, report and export of a method (see the module docstring); the
    attributes it reads are declared by ``SparseMethod.__init__``."""

    name: ClassVar[str]
    aliases: ClassVar[tuple[str, ...]]
    optional_state: ClassVar[tuple[str, ...]]
    model: nn.Module
    layers: dict[str, nn.Module]
    tied: dict[str, list[str]]
    masks: dict[str, nn.Module]
    numels: dict[str, int]
    total_numel: int
    step_count: int
    nonfinite_steps: int
    warned_untrained: bool
    config: Any

    def state_dict(self) -> dict[str, Any]:
        """Method state beside ``model.state_dict()`` (which holds masks and attentions)."""
        return {"method": self.name, "step": self.step_count}

    @final
    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Check that ``state`` is this method's (:meth:`check_state`), then load it with
        :meth:`_load`; any error names the method. Not overridden: extend :meth:`_load`."""
        self.check_state(state)
        try:
            self._load(state)
        except MethodStateError:
            raise
        except (KeyError, TypeError, ValueError, RuntimeError) as err:
            raise MethodStateError(f"cannot load this state into method {self.name!r} "
                                   f"({type(err).__name__}: {err}); pass the state_dict() of "
                                   "the same method on the same model") from err

    def _load(self, state: dict[str, Any]) -> None:
        """Load a checked ``state_dict()`` (a method with more state extends it and calls
        the base's)."""
        self.step_count = int(state["step"])

    def check_state(self, state: Any) -> None:
        """Raise :class:`MethodStateError` unless ``state`` is a ``state_dict()`` of this
        method (its name and every key)."""
        if not isinstance(state, dict):
            raise MethodStateError(f"method state must be the dict of {self.name}.state_dict(), "
                                   f"not a {type(state).__name__}")
        owner = state.get("method")
        if owner is not None and owner not in (self.name, *self.aliases):
            raise MethodStateError(f"this is the state of method {owner!r}; it cannot be loaded "
                                   f"into {self.name!r}: build the same method, then load")
        missing = sorted(set(self.state_dict()) - set(state) - {"method"}
                         - set(self.optional_state))
        if missing:
            raise MethodStateError(f"method state lacks {missing}: it is not a "
                                   f"{self.name}.state_dict() (an empty or another method's "
                                   "state?)")

    def warn_untrained(self, what: str) -> None:
        """Warn (once per method) that ``what`` happens before any training step."""
        if self.step_count == 0 and not self.warned_untrained:
            self.warned_untrained = True
            warn_user(f"{self.name}: {what}" + untrained_hint(self))

    def note_nonfinite(self, what: str) -> None:
        """Count a step that met non-finite numbers (``what`` is logged the first time)."""
        self.nonfinite_steps = warn_once(self.nonfinite_steps, what, self.step_count)

    def export_metadata(self) -> dict[str, str]:
        """Metadata the exported model's files carry (a slimmed model's channel record)."""
        return {}

    def dense_weights(self) -> dict[str, nn.Parameter]:
        """Each prunable layer's trained (dense) weight Parameter, by layer name."""
        return {name: dense_weight(module) for name, module in self.layers.items()}

    def weight_parameters(self) -> list[nn.Parameter]:
        """Every model parameter except the method's own (for the weight optimiser)."""
        own = {id(p) for p in self.parameters()}
        return [p for p in self.model.parameters() if id(p) not in own]

    def global_sparsity(self) -> float:
        """Fraction of prunable weights masked out now."""
        if not self.total_numel:
            return 0.0
        kept = sum(int(p.mask.sum()) for p in self.masks.values())
        return 1.0 - kept / self.total_numel

    def attentions(self) -> dict[str, float]:
        """Per-layer learned scalars to report (ASWL's attentions); none by default."""
        return {}

    def fold_into_weights(self, model: nn.Module) -> None:
        """Fold anything the method applies on top of ``w * mask`` into ``model`` (a copy)."""

    def layer_report(self) -> list[dict[str, Any]]:
        rows = []
        attentions = self.attentions()
        for name in self.layers:
            nonzero = int(self.masks[name].mask.sum())
            numel = self.numels[name]
            rows.append({"name": name, "numel": numel, "nonzero": nonzero,
                         "sparsity": 1.0 - nonzero / numel, "attention": attentions.get(name)})
        return rows

    def export(self) -> nn.Module:
        """A plain copy of the model: masks applied, parametrizations removed, pruned = 0.
        Layers that shared one weight share one (masked) weight in the copy too. A model with
        NaN or infinite weights is refused (:class:`aswl.finite.NonFiniteError`, naming them)."""
        self.warn_untrained("export() before any step(): the model is untrained (its masks "
                            "come from the initial weights). ")
        plain = copy.deepcopy(self.model)
        self.fold_into_weights(plain)
        names = [*self.layers, *(alias for aliases in self.tied.values() for alias in aliases)]
        strip_layers(plain, names)
        plain.eval()
        skipped = self.nonfinite_steps
        check_finite_weights(plain.state_dict(), f"{self.name}: the exported model",
                             f" ({skipped} step(s) met non-finite numbers)" if skipped else "")
        return plain

    def warn_unreachable(self) -> None:
        """Every layer keeps at least one weight: say so when that caps the sparsity."""
        target = self.config.target_sparsity
        reachable = 1.0 - len(self.layers) / self.total_numel
        if target > reachable + 1e-9:
            warn_user(f"{self.name}: target_sparsity {target:.0%} cannot be reached: every layer "
                  f"keeps at least one weight, so {len(self.layers)} of the {self.total_numel} "
                  f"prunable weights stay and the model ends at most {reachable:.1%} sparse "
                  f"(layers {list(self.layers)[:8]})")

    def zero_grad(self) -> None:
        for param in self.parameters():
            param.grad = None
