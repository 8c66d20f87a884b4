"""Model registry: name -> builder, plus lazy ``tv:`` / ``timm:`` fallbacks."""

from __future__ import annotations

import importlib
import inspect
import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from aswl.safe_yaml import short_repr

logger = logging.getLogger(__name__)

Builder = Callable[..., nn.Module]
InputShape = tuple[int, int, int]

_PREFIXES = ("tv:", "timm:")
_FALLBACK_HINT = (
    "Prefix a name with 'tv:' for torchvision.models (pip install aswl[vision]) "
    "or 'timm:' for timm models (pip install aswl[timm])."
)


class ModelError(ValueError):
    """Raised for unknown model names, bad builder arguments or missing optional packages."""


@dataclass(frozen=True)
class _Entry:
    builder: Builder
    input_shape: InputShape


_REGISTRY: dict[str, _Entry] = {}


def register_model(
    name: str, *, input_shape: InputShape = (3, 32, 32)
) -> Callable[[Builder], Builder]:
    """Decorator registering ``fn(num_classes, input_shape, **kwargs) -> nn.Module`` as ``name``.

    ``input_shape`` is metadata: the (C, H, W) the model is meant for, returned by
    :func:`default_input_shape`.
    """
    key = name.strip().lower()
    if not key or key.startswith(_PREFIXES):
        raise ModelError(f"invalid model name {name!r}")

    def decorator(fn: Builder) -> Builder:
        if key in _REGISTRY and _REGISTRY[key].builder is not fn:
            raise ModelError(f"model {key!r} is already registered")
        _REGISTRY[key] = _Entry(builder=fn, input_shape=tuple(input_shape))  # type: ignore[arg-type]
        return fn

    return decorator


def list_models() -> list[str]:
    """Sorted names of all registered models (``tv:``/``timm:`` fallbacks are not listed)."""
    return sorted(_REGISTRY)


def _unknown(name: str) -> ModelError:
    return ModelError(
        f"unknown model {name!r}. Available models: {', '.join(list_models())}. {_FALLBACK_HINT}"
    )


def default_input_shape(name: str) -> InputShape:
    """The (C, H, W) input shape a registered model is designed for (e.g. (1, 28, 28) for MNIST)."""
    key = name.strip().lower()
    if key not in _REGISTRY:
        raise _unknown(name)
    return _REGISTRY[key].input_shape


MAX_CLASSES = 1_000_000
"""Most classes a model may be built for."""
MAX_INPUT_SIDE = 1 << 16
"""Largest channel count, height or width of an input shape."""
MAX_INPUT_VALUES = 1 << 26
"""Most values (C*H*W) of one input sample: 64 Mi, 256 MiB in fp32 (ImageNet's 3x224x224 is
150,528)."""


def check_input_shape(input_shape: Any) -> InputShape:
    """``input_shape`` as (C, H, W) of positive ints within :data:`MAX_INPUT_SIDE` and
    :data:`MAX_INPUT_VALUES`, or a :class:`ModelError` saying the bounds."""
    try:
        shape = tuple(int(s) for s in input_shape)
    except (TypeError, ValueError, OverflowError) as e:
        raise ModelError(f"input_shape must be (C, H, W), got {short_repr(input_shape)}") from e
    if len(shape) != 3 or min(shape) < 1:
        raise ModelError(f"input_shape must be (C, H, W) of positive ints, got "
                         f"{short_repr(input_shape)}")
    if max(shape) > MAX_INPUT_SIDE or math.prod(shape) > MAX_INPUT_VALUES:
        raise ModelError(f"input_shape {shape} is too large: each of C, H, W at most "
                         f"{MAX_INPUT_SIDE:,} and C*H*W at most {MAX_INPUT_VALUES:,} values")
    return shape  # type: ignore[return-value]


def _check_args(num_classes: int, input_shape: Any) -> InputShape:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or \
            not 1 <= num_classes <= MAX_CLASSES:
        raise ModelError(f"num_classes must be an int in [1, {MAX_CLASSES:,}], got "
                         f"{short_repr(num_classes)}")
    return check_input_shape(input_shape)


def _check_kwargs(name: str, fn: Builder, kwargs: dict[str, Any]) -> None:
    """Raise ModelError naming any kwarg the builder does not accept."""
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return
    accepted = {
        k
        for k, p in params.items()
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    } - {"num_classes", "input_shape"}
    bad = sorted(set(kwargs) - accepted)
    if bad:
        raise ModelError(
            f"model {name!r} got unexpected argument(s) {', '.join(bad)}; "
            f"accepted: {', '.join(sorted(accepted)) or 'none'}"
        )


def _installed_version(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def _import_optional(module: str, prefix: str, extra: str) -> Any:
    """Import an optional model package, turning a missing or broken install into a ModelError.

    A torchvision (or timm, which imports torchvision) built for another torch fails while
    loading its compiled extension: an OSError (undefined symbol), a RuntimeError (operator
    ``torchvision::nms`` does not exist) or an AttributeError. Those name the mismatch.
    """
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as e:
        missing = (e.name or "").split(".")[0]
        if missing in (module.split(".")[0], "torchvision"):  # the package itself is absent
            raise ModelError(
                f"{module} is required for '{prefix}:' models; "
                f"install it with `pip install aswl[{extra}]`"
            ) from e
        broken: Exception = e
    except (ImportError, OSError, RuntimeError, AttributeError) as e:
        broken = e
    import torch

    torch_version = torch.__version__
    minor = torch_version.split(".")[1] if torch_version.count(".") >= 1 else "?"
    tv_hint = f"0.{int(minor) + 15}" if minor.isdigit() else "matching"
    raise ModelError(
        f"'{prefix}:' models: {module} is installed but cannot load "
        f"({type(broken).__name__}: {str(broken).splitlines()[0] if str(broken) else ''}). "
        f"Usually torchvision {_installed_version('torchvision')} was built for another torch "
        f"than the installed {torch_version} (e.g. a CUDA build on a CPU torch). Fix: install "
        f"the torchvision built for this torch (torchvision {tv_hint} from the same index as "
        "torch, e.g. `pip install torchvision --index-url https://download.pytorch.org/whl/cpu`"
        " for a CPU torch)."
    ) from broken


def _create_fallback(name: str, num_classes: int, kwargs: dict[str, Any]) -> nn.Module:
    prefix, _, sub = name.partition(":")
    prefix = prefix.lower()
    if not sub:
        raise ModelError(f"missing model name after '{prefix}:' in {name!r}")
    if prefix == "tv":
        tvm = _import_optional("torchvision.models", "tv", "vision")
        fn = getattr(tvm, sub, None)
        if fn is None or not callable(fn):
            raise ModelError(f"torchvision.models has no model {sub!r}")
        call: Callable[[], nn.Module] = lambda: fn(num_classes=num_classes, **kwargs)  # noqa: E731
    else:
        timm = _import_optional("timm", "timm", "timm")
        call = lambda: timm.create_model(  # noqa: E731
            sub, num_classes=num_classes, pretrained=False, **kwargs
        )
    try:
        return call()
    except TypeError as e:
        raise ModelError(f"bad arguments for {name!r}: {e}") from e
    except RuntimeError as e:  # timm raises RuntimeError for unknown names
        raise ModelError(f"could not build {name!r}: {e}") from e


def create_model(
    name: str,
    num_classes: int = 10,
    input_shape: tuple[int, int, int] = (1, 28, 28),
    **kwargs: Any,
) -> nn.Module:
    """Build a model by registered name, or ``tv:NAME`` / ``timm:NAME`` (lazy optional imports).

    Raises:
        ModelError: unknown name, unexpected keyword argument, invalid shape/classes, or a
            missing optional package.
    """
    if not isinstance(name, str):
        raise ModelError(f"model name must be a str, got {type(name).__name__}")
    stripped = name.strip()
    if stripped.lower().startswith(_PREFIXES):
        _check_args(num_classes, input_shape)
        model = _create_fallback(stripped, num_classes, kwargs)
        logger.debug("created fallback model %s", stripped)
        return model
    key = stripped.lower()
    entry = _REGISTRY.get(key)
    if entry is None:
        raise _unknown(name)
    shape = _check_args(num_classes, input_shape)
    _check_kwargs(key, entry.builder, kwargs)
    model = entry.builder(num_classes=num_classes, input_shape=shape, **kwargs)
    logger.debug(
        "created model %s (num_classes=%d, input_shape=%s, %d params)",
        key,
        num_classes,
        shape,
        sum(p.numel() for p in model.parameters()),
    )
    return model
