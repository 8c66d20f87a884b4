"""The CIFAR reader builds only the batch layout: a pickle that asks to run code is refused."""

from __future__ import annotations

import os
import pickle
import struct
from pathlib import Path

import numpy as np
import pytest

from aswl.data import DatasetError, build_datasets
from aswl.data.cifar import load_batch, safe_unpickle


class _RunsCommand:
    """Unpickling this calls os.system (a plain pickle.load would run the command)."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self):
        return (os.system, (self.command,))


class _QuietPayload:
    """Runs code through builtins.exec, then hands back a valid-looking label list."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({str(self.marker)!r}, 'w').write('ran') and [0, 1]",))


def _valid(n: int = 2) -> dict:
    return {b"batch_label": b"x", b"data": np.zeros((n, 3072), np.uint8), b"labels": [0] * n}


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_malicious_batch_is_refused_and_nothing_runs(tmp_path: Path, make_cifar,
                                                     protocol: int) -> None:
    folder = make_cifar(tmp_path)
    marker = tmp_path / "marker"
    loud = {**_valid(), b"x": _RunsCommand(f"touch {marker}")}
    (folder / "data_batch_2").write_bytes(pickle.dumps(loud, protocol=protocol))
    with pytest.raises(DatasetError, match=r"refused to load (posix|os)\.system") as info:
        build_datasets("cifar10", root=tmp_path)
    assert "data_batch_2" in str(info.value) and "nothing in it was run" in str(info.value)
    assert not marker.exists()
    # the quiet variant: a valid batch whose labels come from code
    quiet = {**_valid(), b"labels": _QuietPayload(marker)}
    (folder / "data_batch_2").write_bytes(pickle.dumps(quiet, protocol=protocol))
    with pytest.raises(DatasetError, match=r"refused to load (__builtin__|builtins)\.eval"):
        build_datasets("cifar10", root=tmp_path)
    assert not marker.exists()
    # the same file through plain pickle really would run it (so the test can fail)
    pickle.loads((folder / "data_batch_2").read_bytes())  # noqa: S301
    assert marker.exists()


@pytest.mark.parametrize("protocol", range(6))
def test_batch_layout_round_trips_at_every_protocol(protocol: int) -> None:
    batch = {**_valid(3), b"filenames": [b"a.png", b"b.png", b"c.png"]}
    batch[b"data"] = np.arange(3 * 3072, dtype=np.uint8).reshape(3, 3072)
    loaded = safe_unpickle(pickle.dumps(batch, protocol=protocol))
    assert np.array_equal(loaded[b"data"], batch[b"data"])
    assert loaded[b"labels"] == batch[b"labels"] and loaded[b"filenames"] == batch[b"filenames"]


@pytest.mark.parametrize("array", [np.zeros(3, dtype=object), np.zeros(3, np.float32),
                                   np.ma.masked_array(np.zeros(3, np.uint8))])
def test_non_integer_or_subclass_arrays_are_refused(array: np.ndarray) -> None:
    for protocol in (2, 4, 5):
        with pytest.raises(pickle.UnpicklingError):
            safe_unpickle(pickle.dumps(array, protocol=protocol))


def _py2_batch(data: np.ndarray, labels: list[int]) -> bytes:
    """A batch as Python 2 cPickle (protocol 2) with numpy 1.x writes it: the real files."""
    def s(text: bytes) -> bytes:  # SHORT_BINSTRING or BINSTRING (Python 2 str)
        if len(text) < 256:
            return b"U" + bytes([len(text)]) + text
        return b"T" + struct.pack("<I", len(text)) + text

    dtype = (b"cnumpy\ndtype\n" + s(b"u1") + b"K\x00K\x01\x87R(K\x03" + s(b"|")
             + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb")
    shape = b"(" + b"".join(b"M" + struct.pack("<H", d) for d in data.shape) + b"t"
    array = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85" + s(b"b")
             + b"\x87R(K\x01" + shape + dtype + b"\x89" + s(data.tobytes()) + b"tb")
    label_list = b"]" + b"(" + b"".join(b"K" + bytes([v]) for v in labels) + b"e"
    return (b"\x80\x02}(" + s(b"batch_label") + s(b"py2") + s(b"data") + array + s(b"labels")
            + label_list + b"u.")


def test_python2_numpy1_batch_loads(tmp_path: Path) -> None:
    data = np.random.default_rng(0).integers(0, 256, (2, 3072), dtype=np.uint8)
    path = tmp_path / "data_batch_1"
    path.write_bytes(_py2_batch(data, [3, 7]))
    images, labels = load_batch(path)
    assert labels.tolist() == [3, 7]
    assert np.array_equal(images.numpy().reshape(2, 3072), data)
