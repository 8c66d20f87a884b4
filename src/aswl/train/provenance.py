"""What a checkpoint belongs to: its run folder's config, and the data it was trained on.

``--resume`` continues the run whose checkpoint is in ``--out``. :func:`check_belongs` refuses a
checkpoint whose config is another run's than the folder's ``config.yaml`` (e.g. a ``last.pt``
copied from another run folder), instead of resuming that other run and rewriting the folder's
config. :func:`data_fingerprint` records the sizes of the splits and a SHA-256 of a fixed sample
of their contents in every checkpoint; :func:`compare_data` names what changed when a run is
resumed on other data (same file names, other images), which would otherwise go unnoticed.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Any

import torch

log = logging.getLogger(__name__)

SAMPLES = 64
"""Samples of each split whose contents enter the fingerprint (evenly spaced)."""


def check_belongs(out: Path, saved: dict[str, Any], resumable: frozenset[str]) -> None:
    """Raise ``TrainingError`` if ``out/config.yaml`` describes another run than ``saved``
    (the checkpoint's config); settings a resume may change are not compared."""
    from aswl.config import ConfigError, config_diff, read_yaml_mapping
    from aswl.train.dist import TrainingError

    path = out / "config.yaml"
    if not path.is_file():
        return
    try:
        folder = read_yaml_mapping(path, "config file")
    except ConfigError:
        return  # a damaged config.yaml: the checkpoint's own config is used and rewrites it
    changed = config_diff(folder, saved, resumable)
    if changed:
        shown = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4
                                          else "")
        raise TrainingError(
            f"--resume: {out / 'checkpoints' / 'last.pt'} is not this folder's run: its "
            f"{shown} differ from {path} (was it copied from another run?). Put back this "
            "run's checkpoint, or delete it to restart from config.yaml (--overwrite)")


def _sample_hash(dataset: Any) -> str | None:
    """SHA-256 of ``SAMPLES`` evenly spaced samples' stored contents (no augmentation)."""
    size = len(dataset)
    if size == 0:
        return None
    indices = sorted({int(i * size / SAMPLES) for i in range(min(SAMPLES, size))})
    digest = hashlib.sha256()
    images, labels = getattr(dataset, "images", None), getattr(dataset, "labels", None)
    samples = getattr(dataset, "samples", None)
    if isinstance(images, torch.Tensor) and isinstance(labels, torch.Tensor):
        index = torch.tensor(indices)
        digest.update(images[index].contiguous().numpy().tobytes())
        digest.update(labels[index].contiguous().numpy().tobytes())
    elif isinstance(samples, list) and len(samples) == size:  # file-backed (ImageFolder-like)
        for i in indices:
            digest.update(repr(samples[i]).encode())
            path = samples[i][0] if isinstance(samples[i], tuple) else None
            if isinstance(path, (str, Path)) and Path(path).is_file():
                digest.update(str(Path(path).stat().st_size).encode())
    else:
        return None
    return digest.hexdigest()


def data_fingerprint(data: Any) -> dict[str, Any]:
    """Sizes and sample hashes of the train, val and test splits of a ``Datasets``."""
    out: dict[str, Any] = {}
    for split in ("train", "val", "test"):
        dataset = getattr(data, split, None)
        if dataset is None:
            continue
        out[split] = {"samples": len(dataset), "sha256": _sample_hash(dataset)}
    return out


def compare_data(saved: dict[str, Any] | None, now: dict[str, Any]) -> list[str]:
    """What changed between two fingerprints, one phrase per change (empty: same data)."""
    if not isinstance(saved, dict):
        return []
    changes = []
    for split in sorted(set(saved) | set(now)):
        old, new = saved.get(split), now.get(split)
        if old is None or new is None:
            changes.append(f"the {split} split {'appeared' if old is None else 'is gone'}")
        elif old.get("samples") != new.get("samples"):
            changes.append(f"{split}: {old.get('samples')} -> {new.get('samples')} samples")
        elif old.get("sha256") != new.get("sha256"):
            changes.append(f"{split}: same size, other contents (sample hash differs)")
    return changes


def warn_if_data_changed(saved: dict[str, Any] | None, now: dict[str, Any], where: str) -> None:
    """Log a warning naming what changed in the data since the checkpoint ``where``."""
    changes = compare_data(saved, now)
    if changes:
        log.warning("the training data changed since %s was written: %s. The resumed run "
                    "continues on the new data, so it is not the run that was interrupted",
                    where, "; ".join(changes))
