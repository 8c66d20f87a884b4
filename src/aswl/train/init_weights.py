"""``--set init=PATH``: start a run from trained weights (prune a trained model).

The file is a safetensors file (a plain model, or an aswl compact file) or a torch file
holding a state_dict (or a dict with one under ``state_dict`` / ``model``) of the same
model; it is checked key by key and shape by shape before anything is loaded.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from aswl.checks import ConfigError
from aswl.finite import check_finite

log = logging.getLogger(__name__)


def _state_of(loaded: Any, path: Path) -> dict[str, Tensor]:
    if isinstance(loaded, dict) and not all(isinstance(v, Tensor) for v in loaded.values()):
        for key in ("state_dict", "model"):
            if isinstance(loaded.get(key), dict):
                return _state_of(loaded[key], path)
    if not isinstance(loaded, dict) or not all(isinstance(v, Tensor) for v in loaded.values()):
        raise ConfigError(f"init = {str(path)!r} holds no state_dict (a dict of tensors, or one "
                          "under 'state_dict' or 'model'): save it with "
                          "torch.save(model.state_dict(), path) or as safetensors")
    return loaded


def read_initial_weights(path: str | Path) -> dict[str, Tensor]:
    """The state dict in ``path`` (safetensors, or a torch file read with weights_only)."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise ConfigError(f"init = {str(path)!r} does not exist: give a safetensors or "
                          "state_dict file of the same model")
    if path.suffix == ".safetensors":
        from aswl.export.compact import ExportError, load_state_file

        try:
            return load_state_file(path)
        except ExportError as err:
            raise ConfigError(f"init: {err}") from err
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file gets the same advice
        raise ConfigError(f"init = {str(path)!r} is not a readable torch file "
                          f"({type(err).__name__}: {err}); give a safetensors or "
                          "torch.save(model.state_dict()) file") from err
    state = _state_of(loaded, path)
    if state and all(key.startswith("module.") for key in state):  # saved from DDP
        state = {key.removeprefix("module."): value for key, value in state.items()}
    check_finite(state, f"init = {str(path)!r}")
    return state


def load_initial_weights(model: nn.Module, path: str | Path) -> None:
    """Fill ``model`` from ``path``, after checking every key and shape against it."""
    state = read_initial_weights(path)
    own = model.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    shapes = [f"{key} {tuple(state[key].shape)} vs {tuple(value.shape)}"
              for key, value in own.items()
              if key in state and tuple(state[key].shape) != tuple(value.shape)]
    problems = [f"{label} {items[:5]}{' ...' if len(items) > 5 else ''}"
                for label, items in (("missing keys", missing), ("unexpected keys", unexpected),
                                     ("shape mismatches (file vs model)", shapes)) if items]
    if problems:
        raise ConfigError(f"init = {str(path)!r} is not a state_dict of this model: "
                          f"{'; '.join(problems)}. Give the weights of the same model (the "
                          "same `model` and `model_args`, e.g. the model.safetensors of a "
                          "dense `aswl train` run)")
    with torch.no_grad():
        model.load_state_dict(state)
    zeros = sum(int((value == 0).sum()) for value in state.values() if value.is_floating_point())
    log.info("initial weights from %s (%d tensors, %d exact zeros)", path, len(state), zeros)
