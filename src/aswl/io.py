"""The one file writer: atomic, umask modes, leftovers removed, OS errors as one line.

Every file aswl writes (models, exports, reports, plots, checkpoints, tables) goes through
:func:`write_atomic`: the bytes go to a temporary file next to the target (mode 0666 minus the
umask, as ``open`` gives; not mkstemp's 0600), are flushed to disk, and the temporary is renamed
over the target. A failure (full disk, file-size limit, signal) removes the temporary and leaves
any old target as it was; a ``kill -9`` leaves a temporary that :func:`remove_temp_files`
deletes on the next start. An ``OSError`` becomes a :class:`WriteError`: one line naming the
file, the reason and the fix.
"""

from __future__ import annotations

import errno
import glob
import io
import os
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

TEMP_SUFFIX = ".tmp"

_FIXES = {
    errno.ENOSPC: "the disk is full: free some space",
    errno.EDQUOT: "the disk quota is used up: free some space",
    errno.EROFS: "the file system is read-only: write to another place",
    errno.EACCES: "permission denied: make the folder writable or write to another place",
    errno.EPERM: "not permitted: make the folder writable or write to another place",
    errno.EFBIG: ("the file is larger than the file-size limit (`ulimit -f`) or the file "
                  "system's largest file: raise the limit (`ulimit -f unlimited`) or write to "
                  "another file system"),
    errno.ELOOP: "a symbolic link loop is in the path: remove the link or choose another name",
    errno.EISDIR: "it is a folder: remove it or choose another name",
    errno.ENOTDIR: "a part of the path is a file, not a folder: choose another path",
    errno.ENOENT: "its folder does not exist: create it or choose another path",
    errno.ENAMETOOLONG: "the name is too long: choose a shorter path",
    errno.EIO: "an input/output error on the device: check the disk",
}


class WriteError(RuntimeError):
    """A file could not be written; the message names the file, the reason and the fix."""


def explain(err: OSError, path: str | Path, action: str = "write") -> str:
    """One line for an OS error on ``path``: what failed, why, and what to do."""
    fix = _FIXES.get(err.errno or 0)
    if fix is None:
        fix = f"{err.strerror or err}: fix the cause and try again"
    return f"cannot {action} {str(path)!r}: {fix}"


_AGAIN = {"train": "continue with --resume",
          "compare": "run the same command again (finished runs are kept)"}


def failure_line(err: OSError | WriteError, command: str) -> str:
    """The CLI's line for a write that failed in ``command``: what, why, the fix, and how to
    go on (only ``train`` has ``--resume``)."""
    text = explain(err, err.filename or "a file") if isinstance(err, OSError) else str(err)
    return f"{text}; then {_AGAIN.get(command, 'run the command again')}"


def _loops(path: Path) -> bool:
    """Does ``path`` (or a folder above it) end in a symbolic link that never resolves?"""
    for part in (path, *path.parents):
        if part.is_symlink():
            try:
                part.resolve(strict=True)
            except (RuntimeError, OSError) as err:
                if isinstance(err, RuntimeError) or getattr(err, "errno", None) == errno.ELOOP:
                    return True
    return False


def make_folder(folder: str | Path) -> None:
    """``mkdir -p folder``, with a :class:`WriteError` naming it on failure."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        reason = err
        if _loops(folder):
            reason = OSError(errno.ELOOP, os.strerror(errno.ELOOP))
        elif isinstance(err, FileExistsError):  # a file (or a dangling link) is in the way
            reason = OSError(errno.ENOTDIR, os.strerror(errno.ENOTDIR))
        raise WriteError(explain(reason, folder, "create the folder")) from None


def temp_path(path: Path) -> Path:
    """The temporary name of one write of ``path``: ``NAME.PID.RANDOM.tmp`` beside it."""
    return path.with_name(f"{path.name}.{os.getpid()}.{secrets.token_hex(4)}{TEMP_SUFFIX}")


def write_atomic(path: str | Path,
                 data: bytes | bytearray | memoryview | list[bytes] | Callable[[BinaryIO], None],
                 ) -> None:
    """Write ``data`` (bytes, a list of chunks, or a function writing to a binary file) to
    ``path`` through a temporary file and a rename; a :class:`WriteError` on failure."""
    path = Path(path)
    make_folder(path.parent)
    if _loops(path):
        raise WriteError(explain(OSError(errno.ELOOP, "loop"), path))
    if path.is_dir():
        raise WriteError(explain(OSError(errno.EISDIR, "is a folder"), path))
    tmp = temp_path(path)
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        with os.fdopen(fd, "wb") as file:
            if callable(data):
                data(file)
            else:
                for chunk in (data if isinstance(data, list) else [data]):
                    file.write(chunk)
            file.flush()
            os.fsync(file.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        raise WriteError(explain(err, path)) from err
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Make a rename durable (needed against power loss only, not against kill -9)."""
    try:
        dir_fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def write_text(path: str | Path, text: str) -> None:
    """:func:`write_atomic` of UTF-8 text."""
    write_atomic(path, text.encode("utf-8"))


def write_with(path: str | Path, fill: Callable[[io.TextIOBase], None]) -> None:
    """:func:`write_atomic` of the text that ``fill`` writes to a text stream (csv, ...)."""
    buffer = io.StringIO(newline="")
    fill(buffer)
    write_text(path, buffer.getvalue())


def _alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # e.g. EPERM: another user's live process
        return True
    return True


def remove_temp_files(path: str | Path) -> list[Path]:
    """Delete the temporary files of ``path`` that an interrupted :func:`write_atomic` left
    (those of a process that still runs are kept); returns what was removed."""
    path = Path(path)
    if not path.parent.is_dir():
        return []
    removed = []
    for tmp in path.parent.glob(f"{glob.escape(path.name)}*{TEMP_SUFFIX}"):
        first = tmp.name[len(path.name):].lstrip(".").split(".")[0]
        if first.isdigit() and _alive(int(first)):
            continue
        if tmp.is_file() and not tmp.is_symlink():
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed
