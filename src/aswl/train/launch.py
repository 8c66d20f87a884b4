"""The one reader of the launcher's variables, and the process group it describes.

``torchrun`` tells each process who it is through ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
``MASTER_ADDR`` and ``MASTER_PORT``. :func:`read_launch` reads and checks them all, once, so a
process either joins a complete group or refuses to start with one line naming the variable:
a ``RANK`` other than 0 without ``WORLD_SIZE`` > 1 (which would write a run folder without its
lock, beside the real rank 0), ``WORLD_SIZE`` > 1 without ``RANK`` or the master's address,
values that are not integers or out of range. A stray ``LOCAL_RANK`` or ``MASTER_*`` outside a
group is ignored with a warning.

:func:`join_group` makes the rendezvous with a timeout (``ASWL_DIST_TIMEOUT`` seconds, default
:data:`DEFAULT_TIMEOUT`; it also bounds every collective), and :func:`sigterm_kills` lets
SIGTERM end a process that waits in one (a Python handler cannot run while C++ waits).
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import os
import signal
import threading
from collections.abc import Iterator, Mapping
from dataclasses import dataclass

log = logging.getLogger(__name__)

DEFAULT_TIMEOUT = 600.0
"""Seconds a rendezvous or a collective may wait for the other processes."""


class LaunchError(RuntimeError):
    """The launcher's environment variables do not describe a usable run."""


@dataclass(frozen=True)
class Launch:
    """Who this process is: its rank among ``world_size`` processes (1: no group)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def main(self) -> bool:
        """Rank 0: the one process that writes files (and holds the run folder's lock)."""
        return self.rank == 0


def _integer(environ: Mapping[str, str], name: str, low: int, high: int | None = None
             ) -> int | None:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return None
    try:
        value = int(raw.strip())
    except ValueError:
        raise LaunchError(f"{name}={raw[:40]!r} is not an integer; it is set by torchrun: start "
                          f"with torchrun, or unset {name} for a single-process run") from None
    if value < low or (high is not None and value > high):
        bound = f"in [{low}, {high}]" if high is not None else f">= {low}"
        raise LaunchError(f"{name}={value} is out of range (expected an integer {bound}); start "
                          f"with torchrun, or unset {name} for a single-process run")
    return value


def timeout_seconds(environ: Mapping[str, str] | None = None) -> float:
    """``ASWL_DIST_TIMEOUT`` (seconds, > 0), else :data:`DEFAULT_TIMEOUT`."""
    environ = os.environ if environ is None else environ
    raw = environ.get("ASWL_DIST_TIMEOUT", "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not 0 < value < 1e7:
        raise LaunchError(f"ASWL_DIST_TIMEOUT={raw[:40]!r} must be a number of seconds > 0")
    return value


def read_launch(environ: Mapping[str, str] | None = None, *, group_ready: bool = False
                ) -> Launch:
    """Check the launcher's variables; a :class:`LaunchError` for an unusable combination.

    ``group_ready``: a process group already exists (created by the caller), so the master's
    address is not needed."""
    environ = os.environ if environ is None else environ
    world = _integer(environ, "WORLD_SIZE", 1, 1 << 20)
    rank = _integer(environ, "RANK", 0, None if world is None else world - 1)
    local = _integer(environ, "LOCAL_RANK", 0, 1 << 16)
    timeout_seconds(environ)
    if world is None or world == 1:
        if rank:
            raise LaunchError(
                f"RANK={rank} is set but WORLD_SIZE is {world or 'not set'}: a rank other than "
                "0 belongs to a torchrun job of several processes, and alone it would write "
                "the run folder beside its rank 0. Start the job with torchrun (it sets every "
                "variable), or unset RANK for a single-process run")
        stray = [name for name in ("LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
                 if environ.get(name) and not (name == "LOCAL_RANK" and local == 0)]
        if stray:
            log.warning("%s set without WORLD_SIZE > 1: ignored, this is a single-process run",
                        ", ".join(stray))
        return Launch()
    if rank is None:
        raise LaunchError(f"WORLD_SIZE={world} but RANK is not set: every process of a group "
                          "needs its rank. Start the job with torchrun (it sets every "
                          "variable), or unset WORLD_SIZE for a single-process run")
    if not group_ready:
        missing = [name for name in ("MASTER_ADDR", "MASTER_PORT") if not environ.get(name)]
        if missing:
            raise LaunchError(f"WORLD_SIZE={world} but {' and '.join(missing)} not set: the "
                              "processes cannot meet. Start the job with torchrun, or set "
                              "MASTER_ADDR and MASTER_PORT on every process")
        _integer(environ, "MASTER_PORT", 1, 65535)
    if local is None:
        log.warning("LOCAL_RANK is not set: using 0 (torchrun sets it)")
    return Launch(rank, world, local or 0)


@contextlib.contextmanager
def sigterm_kills() -> Iterator[None]:
    """While waiting in C++ (a rendezvous, a barrier), let SIGTERM end the process at once:
    a Python handler would only run after the wait. The previous handler comes back after."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def join_group(launch: Launch, backend: str) -> None:
    """Create the process group of ``launch`` (env:// rendezvous) with the timeout."""
    import torch.distributed as dist

    seconds = timeout_seconds()
    log.debug("joining a %s group of %d as rank %d (timeout %gs)", backend,
              launch.world_size, launch.rank, seconds)
    try:
        with sigterm_kills():
            dist.init_process_group(backend=backend, rank=launch.rank,
                                    world_size=launch.world_size,
                                    timeout=datetime.timedelta(seconds=seconds))
    except (RuntimeError, ValueError) as err:
        text = " ".join(str(err).split())[:200]
        raise LaunchError(
            f"rank {launch.rank} of {launch.world_size} could not join the process group at "
            f"{os.environ.get('MASTER_ADDR')}:{os.environ.get('MASTER_PORT')} within "
            f"{seconds:g}s ({text}); are all {launch.world_size} processes started (torchrun) "
            "and the address reachable? ASWL_DIST_TIMEOUT sets the wait") from None
