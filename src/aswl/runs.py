"""Run folders: everything that knows what an ``aswl train`` output folder holds.

One module for the trainer, ``aswl train``/``eval``, ``aswl compare`` and the export tools:

- where a run goes (:func:`default_out`) and one writer per folder (:func:`run_directory`);
- how a run starts in a folder that may hold an earlier one (:func:`prepare_run`: resume,
  refuse, or clear the earlier files with :func:`start_fresh`);
- the config a resume goes on with, and whether it may (:func:`resume_config`,
  :func:`check_resume`);
- the model and test set of a finished run, rebuilt from its ``config.yaml``
  (:func:`load_run`).

It builds on :mod:`aswl.config`, :mod:`aswl.data` and :mod:`aswl.models` only, never on the
trainer, so that the export tools can read a run without importing training code.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from aswl.io import remove_temp_files

if TYPE_CHECKING:
    from torch import nn

    from aswl.config import Config
    from aswl.data import Datasets

try:
    import fcntl
except ImportError:  # not POSIX: no locking
    fcntl = None  # type: ignore[assignment]

log = logging.getLogger(__name__)

LOCK_NAME = ".aswl.lock"
WRITTEN = ("config.yaml", "metrics.jsonl", "metrics.csv", "report.json", "model.safetensors",
           "model.sparse.safetensors", "training.png", "train.log", "checkpoints/last.pt",
           "checkpoints/best.pt")
"""Every file a run writes into its folder."""


class RunDirError(RuntimeError):
    """The run folder cannot be used: not creatable, not writable, or in use by another run."""


def _make_folder(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise RunDirError(f"--out {str(out)!r} is a file, not a folder; choose another --out")
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunDirError(f"--out {str(out)!r}: cannot create the folder "
                          f"({err.strerror or err}); choose a folder you can write to") from err


def _probe(folder: Path) -> None:
    """Create and delete a file in ``folder``: the only reliable writability test."""
    probe = folder / f".aswl-probe-{os.getpid()}.tmp"
    try:
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        try:
            os.write(fd, b"x")
        finally:
            os.close(fd)
        probe.unlink()
    except OSError as err:
        raise RunDirError(f"cannot write in {str(folder)!r} ({err.strerror or err}); make it "
                          "writable or choose another --out") from err


def check_writable(out: Path) -> None:
    """Raise :class:`RunDirError` unless the run can write every file it will write."""
    checkpoints = out / "checkpoints"
    for folder in (out, checkpoints):
        if folder.exists() and not folder.is_dir():
            raise RunDirError(f"{str(folder)!r} is a file, not a folder; remove it")
        try:
            folder.mkdir(exist_ok=True)
        except OSError as err:
            raise RunDirError(f"cannot create {str(folder)!r} ({err.strerror or err}); make "
                              f"{str(out)!r} writable or choose another --out") from err
        _probe(folder)
    for name in WRITTEN:
        path = out / name
        if not (path.exists() or path.is_symlink()):
            continue
        if not path.is_file():
            raise RunDirError(f"{str(path)!r} is not a regular file (a folder or a broken link); "
                              "remove it or choose another --out")
        if not os.access(path, os.W_OK):
            raise RunDirError(f"{str(path)!r} is read-only; make it writable (chmod u+w) or "
                              "choose another --out")


def _holder(fd: int) -> str:
    try:
        text = os.pread(fd, 64, 0).decode("ascii", "replace").strip()
    except OSError:
        return ""
    return f" (pid {text})" if text.isdigit() else ""


@contextlib.contextmanager
def run_directory(out: str | Path, *, main: bool = True) -> Iterator[Path]:
    """Hold ``out`` for one run: create, lock, clean leftovers, check writability.

    One writer per run folder: an exclusive ``flock`` on ``.aswl.lock`` (the kernel releases
    it when the process exits, also on a crash or ``kill -9``); temporary files that an
    interrupted write left behind are removed; every file the run will write is checked to be
    writable, so that a read-only folder stops the run before its first epoch.

    A second process (or a second call in this process) on the same folder gets a
    :class:`RunDirError` naming the holder's pid. ``main=False`` (ranks other than 0, which
    write nothing) does nothing.
    """
    out = Path(out)
    if not main:
        yield out
        return
    _make_folder(out)
    lock = out / LOCK_NAME
    if lock.is_dir() or lock.is_symlink():
        raise RunDirError(f"{str(lock)!r}, aswl's lock file, is a folder or a link; remove it "
                          "(no run holds it) or choose another --out")
    try:
        fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        raise RunDirError(f"cannot write the lock file {str(lock)!r} ({err.strerror or err}); "
                          "make the folder writable or choose another --out") from err
    try:
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise RunDirError(
                    f"{str(out)!r} is in use by another aswl run{_holder(fd)}; wait for it to "
                    "finish, stop it, or choose another --out") from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        removed = [tmp for name in (*WRITTEN, ".aswl-probe-", "checkpoints/.aswl-probe-")
                   for tmp in remove_temp_files(out / name)]
        if removed:
            log.info("removed %d temporary file(s) left by an interrupted write: %s",
                     len(removed), ", ".join(p.name for p in removed))
        check_writable(out)
        yield out
    finally:
        os.close(fd)  # releases the lock


# --------------------------------------------------------------------- starting a run
RUN_FILES = ("metrics.jsonl", "metrics.csv", "report.json", "model.safetensors",
             "model.sparse.safetensors", "training.png", "checkpoints/last.pt",
             "checkpoints/best.pt")
"""What an earlier run in the same folder wrote and a fresh start removes."""
CHECKPOINT = Path("checkpoints") / "last.pt"
"""The checkpoint a run resumes from, relative to its folder."""


def default_out(config: Config) -> Path:
    """``runs/<method>-<model>-<dataset>-s<seed>``: where a run goes without ``--out``."""
    return Path("runs") / f"{config.method_name()}-{config.model}-{config.dataset}-s{config.seed}"


def has_checkpoint(out: str | Path) -> bool:
    """Does ``out`` hold a checkpoint to resume from?"""
    return (Path(out) / CHECKPOINT).is_file()


def start_fresh(out: str | Path, main: bool = True) -> None:
    """Remove the files of an earlier run in ``out`` (metrics, report, models, checkpoints),
    so that a fresh start never mixes its metric lines with those of an earlier attempt.
    ``main=False`` (ranks other than 0, which write nothing) removes nothing."""
    if not main:
        return
    for name in RUN_FILES:
        (Path(out) / name).unlink(missing_ok=True)


def out_folder(text: str | Path) -> Path:
    """``--out`` as a folder; an empty one (which would write into the current folder) is a
    :class:`RunDirError`."""
    if not str(text).strip():
        raise RunDirError("--out is empty; give the run's folder (e.g. --out runs/mine), or "
                          "leave --out out for runs/<method>-<model>-<dataset>-s<seed>")
    return Path(text)


def earlier_run(out: str | Path, config: Config | None = None) -> str | None:
    """What in ``out`` shows an earlier run (None: nothing): a result or checkpoint file
    (:data:`RUN_FILES`, whatever the logging options), or a ``config.yaml`` whose settings
    differ from ``config`` (one that stopped before any result; the same settings start it
    again with nothing lost)."""
    out = Path(out)
    found = [name for name in RUN_FILES if (out / name).exists()]
    if found:
        return ", ".join(found[:3])
    changed = changed_settings(out, config) if config is not None else \
        (["config.yaml"] if (out / "config.yaml").exists() else [])
    if changed:
        return f"config.yaml (of other settings: {', '.join(changed[:3])})"
    return None


def prepare_run(out: str | Path, *, resume: bool, overwrite: bool = False,
                main: bool = True, config: Config | None = None) -> bool:
    """Decide how a run starts in ``out``; returns whether it resumes from a checkpoint.

    ``resume`` with a checkpoint: resume. ``resume`` without one: start from scratch (with a
    warning) after removing what an attempt that stopped before its first checkpoint wrote.
    Otherwise an earlier run (:func:`earlier_run`, compared with ``config``) is a
    :class:`RunDirError`, unless ``overwrite`` removes its files. Every rank decides alike;
    only the main one (``main``) removes files.
    """
    out = Path(out)
    if resume:
        if has_checkpoint(out):
            return True
        if main:
            log.warning("--resume: no checkpoint in %s yet, starting from scratch", out)
        start_fresh(out, main)  # e.g. an epoch-1 metrics line without its checkpoint
        return False
    found = earlier_run(out, config)
    if found:
        if not overwrite:
            raise RunDirError(f"{out} already holds a run ({found}); use --resume to continue "
                              "it, --overwrite to replace it, or another --out")
        start_fresh(out, main)
    return False


def write_config(out: str | Path, config: Config) -> None:
    """``out/config.yaml``: the settings of the run in ``out`` (what ``--resume`` reads)."""
    import yaml

    from aswl.io import write_text

    write_text(Path(out) / "config.yaml", yaml.safe_dump(config.to_dict(), sort_keys=False))


def check_resume(saved: dict[str, Any], config: Config, source: str | Path,
                 trained: int | None = None) -> None:
    """Raise :class:`RunDirError` unless ``config`` differs from the run's ``saved`` config
    only in the settings a resume may change (:data:`aswl.config.RESUMABLE_KEYS`), and asks
    for at least the ``trained`` epochs (a resume never rewrites what was trained)."""
    from aswl.config import RESUMABLE_KEYS, config_diff

    if trained is not None and config.epochs < trained:
        raise RunDirError(
            f"--resume with epochs = {config.epochs}: the run in {source} has trained "
            f"{trained} epochs, and a resume never rewrites what was trained; set epochs >= "
            f"{trained}, or start a new run (another --out) for fewer")
    changed = config_diff(saved, config.to_dict())
    if changed:
        raise RunDirError(
            f"--resume cannot change {', '.join(changed)} (the run in {source} has other "
            f"values); a resume may change only {', '.join(sorted(RESUMABLE_KEYS))}. Start a "
            "new run (another --out) to change the others")


def changed_settings(out: str | Path, config: Config) -> list[str]:
    """Dotted config keys whose value in ``out/config.yaml`` differs from ``config``, except
    the settings that never change a result (:data:`aswl.config.NEUTRAL_KEYS`): a finished
    run with none is reused as it is."""
    from aswl.checks import ConfigError
    from aswl.config import NEUTRAL_KEYS, config_diff, read_yaml_mapping

    path = Path(out) / "config.yaml"
    if not path.is_file():
        return []
    try:
        saved = read_yaml_mapping(path, "config file")
    except ConfigError:
        return ["config.yaml (unreadable)"]
    return config_diff(saved, config.to_dict(), NEUTRAL_KEYS)


def resume_config(out: Path | None, config_file: str | Path | None, overrides: list[str],
                  checkpoint_config: Callable[[Path], tuple[dict[str, Any], int]]) -> Config:
    """``--resume``: the run's own config (from its checkpoint, read by
    ``checkpoint_config`` with the epochs it has trained, else its config.yaml) with
    ``config_file`` and ``overrides`` on top; only the settings a resume may change may
    differ, and no fewer epochs than trained (:func:`check_resume`)."""
    from aswl.checks import ConfigError
    from aswl.config import load_config, read_yaml_mapping

    if out is None:
        raise ConfigError("--resume needs --out DIR, the folder of the run to continue")
    checkpoint, saved_yaml = Path(out) / CHECKPOINT, Path(out) / "config.yaml"
    trained = None
    if checkpoint.is_file():
        source = checkpoint
        saved, trained = checkpoint_config(checkpoint)
    elif saved_yaml.is_file():
        source, saved = saved_yaml, read_yaml_mapping(saved_yaml, "config file")
    elif config_file is not None:
        return load_config(config_file, overrides)  # nothing saved: start it as given
    else:
        raise RunDirError(
            f"--resume: {out} has no checkpoint and no config.yaml, so the settings of the "
            "run started there are unknown; start it again without --resume, with its "
            "--config and --set (add --overwrite if the folder holds files)")
    config = load_config(config_file, overrides, base=saved)
    check_resume(saved, config, source, trained)
    return config


# ---------------------------------------------------------------- reading a finished run
EVAL_KEYS = ("dataset", "data.", "device", "batch_size")
"""What may change when a finished run is scored again: the data and where it runs."""


def load_run(run: str | Path,
             overrides: list[str] | None = None) -> tuple[Config, Datasets, nn.Module]:
    """The config, datasets (without augmentation) and freshly built model of a run folder.

    ``overrides`` (``KEY=VALUE``) may change only :data:`EVAL_KEYS`: the model is the run's
    own. The model's weights are not loaded (the caller picks the file). Raises
    :class:`RunDirError` for a folder that is not an ``aswl train`` output.
    """
    from aswl.checks import ConfigError
    from aswl.config import load_config
    from aswl.data import build_datasets
    from aswl.models import create_model

    run = Path(run)
    if not (run / "config.yaml").is_file():
        raise RunDirError(f"{run} has no config.yaml: give an `aswl train` output folder")
    for item in overrides or []:
        key = item.split("=", 1)[0].strip()
        if not (key in EVAL_KEYS or key.startswith("data.")):
            raise ConfigError(f"--set {key}: only dataset, data.*, device and batch_size can "
                              "change (the model is the run's own)")
    config = load_config(run / "config.yaml", overrides or [])
    data = build_datasets(config.dataset, config.data.root, augment=False,
                          val_fraction=config.data.val_fraction, seed=config.seed,
                          limit_train=config.data.limit_train, limit_test=config.data.limit_test,
                          image_size=config.data.image_size)
    model = create_model(config.model, num_classes=data.num_classes,
                         input_shape=data.input_shape, **config.model_args)
    return config, data, model
