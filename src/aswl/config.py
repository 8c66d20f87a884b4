"""Configuration: the run config (:class:`Config`, YAML file first, ``--set key=value``
overrides, then validation) and the machinery the method configs share.

Everything is checked before training starts: an unknown key, a value of the wrong type or out
of range stops the run with a message naming the field and the values it may take.

The checkers (:func:`~aswl.checks.build_config`, :func:`~aswl.checks.check`,
:class:`~aswl.checks.ConfigError`) live in :mod:`aswl.checks`, below both this module and the
methods; here: one comparison (:func:`config_diff`) with one list of the settings a run may
change when it is resumed (:data:`RESUMABLE_KEYS`). The method section is checked by the method
registry (:mod:`aswl.methods`), the dataset and model names by theirs: this module imports
them, they never import it.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aswl.checks import ConfigError, build_config, check, check_finite, coerce_value
from aswl.safe_yaml import short_repr

__all__ = ["RESUMABLE_KEYS", "NEUTRAL_KEYS", "Config", "ConfigError", "DataConfig",
           "apply_override", "build_config", "check", "check_finite", "coerce_value",
           "config_diff", "load_config", "parse_override", "read_yaml_mapping", "yaml_load"]


MAX_FACTOR = 1000.0
"""Largest lr, weight_decay and lr_gamma (larger ones overflow the optimiser's arithmetic)."""
NEUTRAL_KEYS: frozenset[str] = frozenset({"progress", "device", "checkpoint_every", "log"})
"""Settings that never change a run's result (a finished run with other values is reused)."""
RESUMABLE_KEYS: frozenset[str] = NEUTRAL_KEYS | {
    "lr", "lr_schedule", "lr_milestones", "lr_gamma", "warmup_epochs", "grad_clip", "epochs"}
"""Settings a run may change when it is resumed (e.g. a lower lr after a divergence, more
epochs); any other difference makes ``--resume`` refuse."""


def config_diff(old: dict[str, Any], new: dict[str, Any],
                allowed: frozenset[str] = RESUMABLE_KEYS) -> list[str]:
    """Sorted dotted keys whose values differ between two config dicts, except ``allowed``."""
    changed: list[str] = []
    for key in sorted(set(old) | set(new)):
        if key in allowed:
            continue
        a, b = old.get(key), new.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            changed += [f"{key}.{sub}" for sub in config_diff(a, b, frozenset())]
        elif a != b:
            changed.append(key)
    return changed


# --------------------------------------------------------------------------- the run config
@dataclass
class DataConfig:
    root: str | None = None
    """Folder with the dataset files (default: the loader's standard place)."""
    download: bool = False
    """Download missing files where a network exists."""
    val_fraction: float = 0.0
    """Hold out this fraction of the training set for validation."""
    limit_train: int | None = None
    """Keep only the first N training samples (quick runs, tests)."""
    limit_test: int | None = None
    """Keep only the first N test samples."""
    epoch_samples: int | None = None
    """Train each epoch on N training samples drawn at random, a fresh draw per epoch from the
    seed (quick runs; the defaults selection). None: the whole training set every epoch."""
    augment: bool = True
    """Training-set augmentation: random shifts of up to 2 pixels (MNIST, Fashion-MNIST, the
    embedded MNIST subset), random crop and flip (CIFAR-10, ImageNet); none for synthetic."""
    workers: int = 0
    """DataLoader worker processes (file-backed datasets such as ImageNet)."""
    image_size: int = 224
    """Crop size of ImageNet-style images."""


@dataclass
class Config:
    model: str = "lenet300"
    """A registered model (``aswl models``), or ``tv:NAME`` / ``timm:NAME``."""
    model_args: dict[str, Any] = field(default_factory=dict)
    """Keyword arguments of the model's builder (e.g. ``{width: 8}``)."""
    dataset: str = "mnist-embedded"
    """A registered dataset (``aswl datasets``)."""
    data: DataConfig = field(default_factory=DataConfig)
    """Where and how the dataset is read."""
    method: dict[str, Any] = field(
        default_factory=lambda: {"name": "aswl", "target_sparsity": 0.95})
    """``name`` plus the method's own options (see ``aswl methods``)."""
    init: str | None = None
    """Start from trained weights: a safetensors or state_dict file of the same model, checked
    key by key. None: the model's random initialisation."""
    epochs: int = 20
    """Passes over the training set."""
    batch_size: int = 64
    """Per-process batch; under DDP the global batch is batch_size * world_size."""
    lr: float = 0.05
    """Peak learning rate of the weights."""
    momentum: float = 0.9
    """SGD momentum (not used by adam/adamw)."""
    nesterov: bool = False
    """Nesterov momentum (SGD)."""
    weight_decay: float = 5e-4
    """L2 on the parameters the method does not regularise itself (ASWL: its lambda)."""
    optimizer: str = "sgd"
    """``sgd``, ``adam`` or ``adamw`` for the weights (a method's own parameters have theirs)."""
    lr_schedule: str = "cosine"
    """``cosine``, ``step`` (times lr_gamma at each of lr_milestones) or ``constant``."""
    lr_milestones: list[float] = field(default_factory=lambda: [0.5, 0.75])
    """Fractions of training at which the step schedule multiplies the lr by lr_gamma."""
    lr_gamma: float = 0.1
    """Factor of each step of the step schedule."""
    warmup_epochs: float = 0.0
    """Linear lr warm-up over this many epochs."""
    grad_clip: float | None = None
    """Clip the global gradient norm of the weights to this value (None: no clipping)."""
    seed: int = 0
    """Seeds the initialisation and the data order."""
    device: str = "auto"
    """``auto`` (cuda if available), ``cpu``, ``cuda``, ``cuda:N``."""
    amp: str = "none"
    """Mixed precision for the forward pass: ``none``, ``bf16`` or ``fp16`` (with a scaler)."""
    select: str = "last"
    """Model reported on test: ``last`` or ``best_val`` (needs data.val_fraction > 0)."""
    checkpoint_every: int = 1
    """Write checkpoints/last.pt every this many epochs (and after the last)."""
    progress: bool = True
    """A tqdm bar during each epoch when stderr is a terminal (never in piped output)."""
    log: list[str] = field(default_factory=lambda: ["jsonl"])
    """Per-epoch metric logs: any of ``jsonl`` (metrics.jsonl), ``csv`` (metrics.csv),
    ``tensorboard`` (tensorboard/, needs the tensorboard package)."""

    def validate(self) -> None:
        def need(ok: bool, name: str, allowed: str) -> None:
            check(ok, name, _get(self, name), allowed, prefix="")

        need(self.epochs >= 1, "epochs", "an integer >= 1")
        need(1 <= self.batch_size <= 2**24, "batch_size", "an integer in [1, 2**24]")
        need(1 <= self.epochs <= 10**6, "epochs", "an integer in [1, 10**6]")
        need(0 <= self.data.workers <= 512, "data.workers",
             "an integer in [0, 512] (0: load in the main process)")
        need(0 < self.lr <= MAX_FACTOR, "lr", f"a number in (0, {MAX_FACTOR:g}]")
        need(0 <= self.momentum < 1, "momentum", "a number in [0, 1)")
        need(0 <= self.weight_decay <= MAX_FACTOR, "weight_decay",
             f"a number in [0, {MAX_FACTOR:g}]")
        need(self.optimizer in ("sgd", "adam", "adamw"), "optimizer", "'sgd', 'adam' or 'adamw'")
        need(self.lr_schedule in ("cosine", "step", "constant"), "lr_schedule",
             "'cosine', 'step' or 'constant'")
        need(all(0 < m < 1 for m in self.lr_milestones), "lr_milestones",
             "fractions of training in (0, 1)")
        need(0 < self.lr_gamma <= MAX_FACTOR, "lr_gamma", f"a number in (0, {MAX_FACTOR:g}]")
        need(0 <= self.warmup_epochs <= 10**6, "warmup_epochs", "a number in [0, 10**6]")
        need(0 <= self.seed < 2**32, "seed", "an integer in [0, 2**32)")
        need(self.grad_clip is None or self.grad_clip > 0, "grad_clip", "null or a number > 0")
        need(self.amp in ("none", "bf16", "fp16"), "amp", "'none', 'bf16' or 'fp16'")
        need(self.select in ("last", "best_val"), "select", "'last' or 'best_val'")
        need(self.select == "last" or self.data.val_fraction > 0, "select",
             "'last' unless data.val_fraction > 0")
        need(0 <= self.data.val_fraction < 1, "data.val_fraction", "a fraction in [0, 1)")
        need(1 <= self.checkpoint_every <= 10**6, "checkpoint_every", "an integer in [1, 10**6]")
        need(self.data.epoch_samples is None or self.data.epoch_samples >= 1,
             "data.epoch_samples", "null or an integer >= 1")
        need(isinstance(self.log, list) and all(name in ("jsonl", "csv", "tensorboard")
                                                for name in self.log),
             "log", "a list of 'jsonl', 'csv', 'tensorboard', e.g. [jsonl, csv]")
        need(self.device == "auto" or self.device == "cpu" or self.device.startswith("cuda"),
             "device", "'auto', 'cpu', 'cuda' or 'cuda:N'")
        taken = sorted({"num_classes", "input_shape"} & set(self.model_args), key=str)
        if taken:
            raise ConfigError(f"model_args.{taken[0]} is set by aswl from the dataset; remove "
                              f"it from model_args (choose the data with dataset=...)")
        self.method_config()  # validates the method section
        _check_names(self)

    def method_name(self) -> str:
        name = self.method.get("name")
        if not isinstance(name, str):
            raise ConfigError("method.name is missing: set e.g. method.name=aswl "
                              "(see `aswl methods`)")
        return name

    def method_structure(self) -> str:
        """``method.structure``: ``weight`` or ``channel`` (default: the method's own)."""
        from aswl.methods.registry import structure_of

        return structure_of(self.method_name(), self.method.get("structure"))

    def method_config(self) -> Any:
        """The method's typed, validated config (``aswl.methods.MethodConfig`` subclass)."""
        from aswl.methods import method_for

        cls = method_for(self.method_name(), self.method_structure())
        options = {k: v for k, v in self.method.items() if k not in ("name", "structure")}
        cls.check_options(options)  # an option this method ignores: named with the method
        return build_config(cls.config_class, options)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _check_names(config: Config) -> None:
    from aswl.data import list_datasets
    from aswl.models import list_models

    if config.dataset not in list_datasets():
        raise ConfigError(f"dataset = {config.dataset!r} is unknown; available: "
                          f"{', '.join(list_datasets())}")
    if ":" not in config.model and config.model.lower() not in list_models():
        raise ConfigError(f"model = {config.model!r} is unknown; available: "
                          f"{', '.join(list_models())} (or tv:NAME / timm:NAME)")


def _get(obj: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        obj = getattr(obj, part)
    return obj


def yaml_load(text: str) -> Any:
    """Parse YAML text safely and bounded (:mod:`aswl.safe_yaml`): no objects, no aliases,
    exponent numbers such as ``1e6`` as floats."""
    from aswl.safe_yaml import yaml_load as load

    return load(text)


def parse_override(text: str) -> tuple[list[str], Any]:
    """``a.b=value`` -> (["a", "b"], value parsed as YAML: numbers, booleans, lists, null)."""
    if "=" not in text:
        raise ConfigError(f"--set {short_repr(text)}: expected KEY=VALUE, e.g. --set "
                          "epochs=5")
    key, raw = text.split("=", 1)
    key = key.strip()
    if not key:
        raise ConfigError(f"--set {short_repr(text)}: the key is empty")
    import yaml  # on first use: `import aswl` stays light

    from aswl.safe_yaml import YamlLimitError, one_line

    try:
        value = yaml_load(raw) if raw.strip() else ""
    except (yaml.YAMLError, YamlLimitError) as err:
        raise ConfigError(f"--set {short_repr(text)}: value is not valid YAML "
                          f"({one_line(err)})") from err
    return key.split("."), value


def apply_override(values: dict[str, Any], path: list[str], value: Any) -> None:
    if path == ["method"] and isinstance(value, str):
        values["method"] = {"name": value}  # switching method drops the old method's options
        return
    node = values
    for part in path[:-1]:
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {'.'.join(path)}: {part!r} is not a section")
        node = child
    node[path[-1]] = value


def read_yaml_mapping(path: str | Path, what: str) -> dict[str, Any]:
    """A YAML file holding a mapping; a clear ConfigError for a missing or malformed file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{what} {str(path)!r} not found")
    import yaml

    from aswl.safe_yaml import MAX_BYTES

    try:
        if path.stat().st_size > MAX_BYTES:
            raise ConfigError(f"{what} {str(path)!r} is {path.stat().st_size:,} bytes, more "
                              f"than the {MAX_BYTES:,} a config may hold; is it a config?")
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise ConfigError(f"{what} {str(path)!r} is not UTF-8 text (byte {err.start} is "
                          f"{path.read_bytes()[err.start:err.start + 1]!r}); is it a YAML file? "
                          "Save it as UTF-8") from err
    except OSError as err:
        raise ConfigError(f"{what} {str(path)!r} cannot be read: {err.strerror or err}") from err
    from aswl.safe_yaml import YamlLimitError, one_line

    try:
        loaded = yaml_load(text) or {}
    except (yaml.YAMLError, YamlLimitError) as err:
        raise ConfigError(f"{what} {str(path)!r} is not valid YAML: {one_line(err)}") from err
    if not isinstance(loaded, dict):
        raise ConfigError(f"{what} {str(path)!r} must hold a mapping of keys")
    return loaded


def load_config(path: str | Path | None = None, overrides: list[str] = (),
                base: dict[str, Any] | None = None) -> Config:
    """Defaults (or ``base``, e.g. a resumed run's own config) <- YAML file <- ``--set``
    overrides; validated."""
    values: dict[str, Any] = Config().to_dict()
    if base is not None:
        _merge(values, copy.deepcopy(base))
    if path is not None:
        loaded = read_yaml_mapping(path, "config file")
        known = {item.name for item in dataclasses.fields(Config)}
        if loaded and not known & set(loaded):
            raise ConfigError(f"config file {str(path)!r} holds none of the config keys (its "
                              f"{len(loaded)} top-level key(s) are not aswl settings); is it "
                              "a config? `aswl config` lists every key")
        if isinstance(loaded.get("method"), str):
            loaded["method"] = {"name": loaded["method"]}
        _merge(values, loaded)
    for text in overrides:
        apply_override(values, *parse_override(text))
    return build_config(Config, values, prefix="")


def _merge(base: dict[str, Any], update: dict[str, Any]) -> None:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict) and key != "method":
            _merge(base[key], value)
        else:
            base[key] = value
