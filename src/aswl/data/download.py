"""Small download helpers (urllib only, no third-party dependencies)."""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

from .errors import DatasetError

logger = logging.getLogger(__name__)

_CHUNK = 1 << 20


def md5sum(path: Path) -> str:
    """Return the hex MD5 digest of a file (integrity check only)."""
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


def download_file(url: str, dest: Path, md5: str | None = None, timeout: float = 60.0) -> Path:
    """Download ``url`` to ``dest`` atomically (via a ``.part`` file), checking ``md5``.

    Raises:
        DatasetError: on any network, file-system or checksum failure.
    """
    dest = Path(dest)
    part = dest.with_name(dest.name + ".part")
    try:
        dest.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise DatasetError(
            f"Cannot create download folder {dest.parent}: {exc}. "
            "Choose a writable folder with data.root=..."
        ) from exc
    logger.info("Downloading %s -> %s", url, dest)
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response, open(part, "wb") as out:
            shutil.copyfileobj(response, out, _CHUNK)
    except (urllib.error.URLError, OSError, ValueError) as exc:
        part.unlink(missing_ok=True)
        raise DatasetError(
            f"Download of {url} failed ({exc}). Check the network connection, or download the "
            f"file by hand into {dest.parent} and point data.root at that folder."
        ) from exc
    if md5 is not None:
        got = md5sum(part)
        if got != md5:
            part.unlink(missing_ok=True)
            raise DatasetError(
                f"Checksum mismatch for {url}: expected MD5 {md5}, got {got}. The download is "
                f"corrupt or the mirror changed; retry, or place a good copy in {dest.parent}."
            )
    os.replace(part, dest)
    return dest


def extract_tar(archive: Path, dest: Path) -> None:
    """Extract a (gzipped) tar archive into ``dest``, refusing unsafe member paths."""
    try:
        with tarfile.open(archive, "r:*") as tar:
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, filter="data")
            else:  # pragma: no cover - Python without extraction filters
                root = Path(dest).resolve()
                for member in tar.getmembers():
                    target = (root / member.name).resolve()
                    if root not in target.parents and target != root:
                        raise DatasetError(f"Unsafe path {member.name!r} in archive {archive}.")
                tar.extractall(dest)  # noqa: S202 - members checked above
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise DatasetError(
            f"Cannot extract {archive}: {exc}. Delete the file and retry with data.download=true."
        ) from exc
