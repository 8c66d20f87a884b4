"""Atomic, checksummed checkpoints that load without executing code.

A checkpoint file is one header line, then the ``torch.save`` payload::

    ASWL-CHECKPOINT {"version": 2, "sha256": "...", "size": 123, "epoch": 4}\\n<payload>

The header's SHA-256 of the payload is checked before anything is unpickled, so a flipped bit
or a truncated file is a clear error, never a silently different model. The payload loads with
``weights_only=True`` (no code runs). Files are written to a temporary name next to the target,
flushed, and renamed over it: a crash or ``kill -9`` leaves the previous checkpoint intact.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
from pathlib import Path
from typing import Any

import torch

from aswl.io import TEMP_SUFFIX, WriteError, remove_temp_files, write_atomic

__all__ = ["CheckpointError", "load_checkpoint", "read_checkpoint_header", "remove_temp_files",
           "save_checkpoint", "write_atomic", "TEMP_SUFFIX"]

log = logging.getLogger(__name__)


class CheckpointError(RuntimeError):
    """A checkpoint is missing, truncated, corrupt, or not one of ours; or cannot be written."""


FORMAT = "aswl-checkpoint-v1"
"""The ``format`` entry of the payload dict (unchanged since v1 files had no header)."""
MAGIC = b"ASWL-CHECKPOINT "
VERSION = 2
_MAX_HEADER = 4096


def save_checkpoint(state: dict[str, Any], path: str | Path) -> None:
    """Write ``state`` to ``path`` atomically with a SHA-256 header; a crash leaves the
    previous file intact. A write failure (e.g. a full disk) is a :class:`CheckpointError`."""
    path = Path(path)
    buffer = io.BytesIO()
    torch.save({"format": FORMAT, **state}, buffer)
    payload = buffer.getbuffer()
    header = {"version": VERSION, "sha256": hashlib.sha256(payload).hexdigest(),
              "size": len(payload)}
    if isinstance(state.get("epoch"), int):
        header["epoch"] = state["epoch"]
    try:
        write_atomic(path, [MAGIC + json.dumps(header).encode() + b"\n", bytes(payload)])
    except WriteError as err:
        kept = " (the previous checkpoint there is intact)" if path.is_file() else ""
        raise CheckpointError(f"{err}{kept}; then continue with --resume") from err


def _split(path: Path, blob: bytes) -> tuple[dict[str, Any] | None, bytes]:
    """(header, payload) of a checkpoint file; header None for a v1 file (no header)."""
    if not blob.startswith(MAGIC):
        return None, blob
    end = blob.find(b"\n", 0, _MAX_HEADER)
    try:
        header = json.loads(blob[len(MAGIC):end]) if end > 0 else None
    except (ValueError, RecursionError):
        header = None
    if not isinstance(header, dict) or not isinstance(header.get("sha256"), str):
        raise CheckpointError(f"checkpoint {str(path)!r} has a damaged header; it is corrupt. "
                              "Delete it to start over, or resume another run")
    return header, blob[end + 1:]


def read_checkpoint_header(path: str | Path) -> dict[str, Any] | None:
    """The header of a checkpoint (``epoch``, ``sha256``, ...) without loading the payload;
    None when the file is missing, unreadable or has no header."""
    try:
        with open(path, "rb") as file:
            head = file.read(_MAX_HEADER)
        header, _ = _split(Path(path), head)
    except (OSError, CheckpointError):
        return None
    return header


def _reason(err: Exception) -> str:
    """torch's error in a few words, without its advice to load with ``weights_only=False``
    (which would run the file's code: never right for a damaged or foreign file)."""
    text = str(err)
    if "weights_only" in text or "Weights only load failed" in text:
        return "it holds objects other than tensors and plain values, refused unexecuted"
    first = next((line.strip() for line in text.splitlines() if line.strip()), "")
    return f"{type(err).__name__}: {first[:160]}"


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict[str, Any]:
    """Verify the checksum, then load with ``weights_only=True``; a damaged, truncated or
    foreign file gives a :class:`CheckpointError` that names it."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {str(path)!r} not found")
    try:
        blob = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be read: {err.strerror or err}"
                              ) from err
    header, payload = _split(path, blob)
    if header is None:
        log.warning("checkpoint %s has no checksum (written by an older aswl); loading it "
                    "unverified", path)
    else:
        digest = hashlib.sha256(payload).hexdigest()
        if len(payload) != header.get("size") or digest != header["sha256"]:
            raise CheckpointError(
                f"checkpoint {str(path)!r} is corrupt: its SHA-256 checksum does not match "
                f"({len(payload)} of {header.get('size')} bytes; the file was changed or "
                "damaged after it was written). Delete it to start over, or restore a copy")
    try:
        state = torch.load(io.BytesIO(payload), map_location=map_location, weights_only=True)
    except Exception as err:  # torch raises several types for damaged files
        raise CheckpointError(
            f"checkpoint {str(path)!r} cannot be read ({_reason(err)}); it is "
            "truncated, corrupt or not an aswl checkpoint. Delete it to start over, or point "
            "--resume at another run") from err
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is not an aswl checkpoint (format {FORMAT})")
    return state
