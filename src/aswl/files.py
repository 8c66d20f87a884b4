"""Files written whole or not at all: a temporary name in the same folder, then a rename.

Below the trainer and the run-folder logic (:mod:`aswl.runs`) alike; imports nothing from aswl.
"""

from __future__ import annotations

import glob
import os
import secrets
from pathlib import Path

TEMP_SUFFIX = ".tmp"
"""Ending of the temporary files of :func:`write_atomic` (removed by :func:`remove_temp_files`)."""

__all__ = ["TEMP_SUFFIX", "remove_temp_files", "write_atomic"]


def write_atomic(path: str | Path, data: bytes | list[bytes]) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename.

    The file gets the mode the umask gives (like ``open``), not mkstemp's 0600. A failure
    (full disk, signal, ...) removes the temporary file and leaves any old ``path`` as it was.
    """
    path = Path(path)
    chunks = [data] if isinstance(data, bytes) else data
    tmp = path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as file:
            for chunk in chunks:
                file.write(chunk)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    try:  # make the rename itself durable (not needed against kill -9, only power loss)
        dir_fd = os.open(path.parent, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def remove_temp_files(path: str | Path) -> list[Path]:
    """Delete the temporary files that an interrupted :func:`write_atomic` of ``path`` left."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed = []
    for tmp in path.parent.glob(f"{glob.escape(path.name)}*{TEMP_SUFFIX}"):
        if tmp.is_file() and not tmp.is_symlink():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed
