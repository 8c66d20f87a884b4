"""One writer per run folder: a lock held for the whole run, checked before any training.

:func:`run_directory` creates the folder, takes an exclusive ``flock`` on ``.aswl.lock`` (the
kernel releases it when the process exits, also on a crash or ``kill -9``), removes temporary
files that an interrupted write left behind, and checks that every file the run will write can
be written, so that a read-only folder or a ``checkpoints/last.pt`` that is a folder stops the
run before its first epoch rather than after it.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from aswl.io import remove_temp_files

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

    A second process (or a second call in this process) on the same folder gets a
    :class:`RunDirError` naming the holder's pid. ``main=False`` (ranks other than 0, which
    write nothing) does nothing.
    """
    out = Path(out)
    if not main:
        yield out
        return
    _make_folder(out)
    try:
        fd = os.open(out / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as err:
        raise RunDirError(f"cannot write in {str(out)!r} ({err.strerror or err}); make it "
                          "writable or choose another --out") from err
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
