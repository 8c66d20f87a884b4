"""Everything checked, writes that fail cleanly (issue 22, classes 2 and 4): SHA-256 of model
files, foreign checkpoints, changed data, one atomic writer with one-line errors."""

from __future__ import annotations

import errno
import io
import json
import logging
import os
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from helpers import error_line
from safetensors import safe_open
from safetensors.torch import load_file, save_file
from torch import nn

import aswl.cli
import aswl.export.compact
import aswl.io
from aswl.cli import main
from aswl.export import ExportError, load_compact, save_compact, save_dense
from aswl.export.compact import load_weights, payload_crc32, write_safetensors
from aswl.export.verify import SHA_KEY
from aswl.io import WriteError, remove_temp_files, write_atomic
from aswl.train import CheckpointError, load_checkpoint, save_checkpoint
from aswl.train.checkpoint import FORMAT, MAGIC

TINY = ["progress=false", "data.limit_train=96", "data.limit_test=64", "batch_size=32",
        "epochs=1", "method.target_sparsity=0.9"]
SRC = str(Path(__file__).resolve().parents[1] / "src")


@pytest.fixture(autouse=True)
def _no_stale_log_handlers():
    """Commands that do not set up logging must not write to an earlier test's closed
    capture stream (the CLI's handlers outlive the test that made them)."""
    root = logging.getLogger()
    saved = root.handlers[:]
    root.handlers = []
    yield
    root.handlers = saved




@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One finished tiny run, copied by the tests that change it."""
    out = tmp_path_factory.mktemp("runs") / "done"
    assert main(["train", "--out", str(out), "--set", *TINY]) == 0
    return out


def copy_run(finished: Path, tmp_path: Path, name: str = "run") -> Path:
    out = tmp_path / name
    shutil.copytree(finished, out)
    return out


def flip(path: Path, offset: int, bit: int = 0) -> None:
    blob = bytearray(path.read_bytes())
    blob[offset] ^= 1 << bit
    path.write_bytes(bytes(blob))


# ------------------------------------------------------------------------ model file checksums
def test_a_bit_flip_in_model_safetensors_is_caught_by_eval_and_export(finished, tmp_path,
                                                                      capsys):
    out = copy_run(finished, tmp_path)
    model = out / "model.safetensors"
    with safe_open(str(model), framework="pt") as handle:
        assert SHA_KEY in handle.metadata()
    flip(model, model.stat().st_size - 3, 4)  # inside the last tensor's data
    assert main(["eval", str(out)]) == 2
    line = error_line(capsys)
    assert "model.safetensors" in line and "SHA-256" in line
    assert main(["export", str(out), "--no-eval", "--out", str(tmp_path / "x.safetensors")]) == 2
    assert "SHA-256" in error_line(capsys)


def test_bit_flips_in_compact_metadata_never_load_a_different_model(tmp_path):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 4))
    with torch.no_grad():
        for layer in (net[0], net[2]):
            layer.weight[torch.rand_like(layer.weight) < 0.7] = 0
    good = tmp_path / "int8.safetensors"
    save_compact(net, ["0", "2"], good, quantize="int8")
    reference = {k: v.clone() for k, v in
                 load_compact(nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 4)),
                              good).state_dict().items()}
    header = int.from_bytes(good.read_bytes()[:8], "little")
    blob = good.read_bytes()
    silent = 0
    for n, offset in enumerate(range(8, 8 + header, max(1, header // 150))):
        bad = tmp_path / "bad.safetensors"
        flipped = bytearray(blob)
        flipped[offset] ^= 1 << (n % 8)
        bad.write_bytes(bytes(flipped))
        fresh = nn.Sequential(nn.Linear(20, 16), nn.ReLU(), nn.Linear(16, 4))
        try:
            state = load_compact(fresh, bad).state_dict()
        except ExportError:
            continue
        silent += any(not torch.equal(state[k], reference[k]) for k in reference)
    assert silent == 0


def test_older_compact_files_with_a_crc_only_still_load(tmp_path):
    net = nn.Linear(8, 4)
    path = tmp_path / "new.safetensors"
    save_compact(net, [""], path)
    tensors = load_file(str(path))
    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata())
    del metadata[SHA_KEY]
    old = tmp_path / "old.safetensors"
    save_file(tensors, str(old), metadata={**metadata, "aswl_crc32": str(payload_crc32(tensors))})
    assert torch.equal(load_compact(nn.Linear(8, 4), old).weight, net.weight)
    save_file(tensors, str(old), metadata=metadata)  # no checksum at all: refused
    with pytest.raises(ExportError, match="no checksum"):
        load_compact(nn.Linear(8, 4), old)
    save_file(tensors, str(old), metadata={**metadata, "aswl_sha2w6": "x"})  # a damaged key
    with pytest.raises(ExportError, match="unknown metadata"):
        load_compact(nn.Linear(8, 4), old)


def test_plain_safetensors_of_other_tools_load_unverified(tmp_path, caplog):
    net = nn.Linear(3, 2)
    path = tmp_path / "plain.safetensors"
    save_file(dict(net.state_dict()), str(path))
    with caplog.at_level(logging.INFO):
        loaded = load_weights(nn.Linear(3, 2), path)
    assert torch.equal(loaded.weight, net.weight) and "unverified" in caplog.text


# ------------------------------------------------------------------------ checkpoints and data
def test_a_checkpoint_of_another_run_is_refused_by_resume(finished, tmp_path, capsys):
    other = tmp_path / "other"
    assert main(["train", "--out", str(other), "--set", *TINY, "seed=7"]) == 0
    out = copy_run(finished, tmp_path)
    shutil.copy(other / "checkpoints" / "last.pt", out / "checkpoints" / "last.pt")
    before = (out / "config.yaml").read_text()
    assert main(["train", "--out", str(out), "--resume", "--set", "epochs=2"]) == 2
    line = error_line(capsys)
    assert "not this folder's run" in line and "seed" in line
    assert (out / "config.yaml").read_text() == before


def test_resume_on_changed_data_warns_naming_the_change(finished, tmp_path, capsys):
    out = copy_run(finished, tmp_path)
    path = out / "checkpoints" / "last.pt"
    state = load_checkpoint(path)
    data = json.loads(state["data"])
    assert data["train"]["samples"] == 96 and data["train"]["sha256"]
    data["train"]["sha256"] = "0" * 64  # as if the images had changed under the same names
    state["data"] = json.dumps(data)
    save_checkpoint({k: v for k, v in state.items() if k != "format"}, path)
    assert main(["train", "--out", str(out), "--resume", "--set", "epochs=2"]) == 0
    err = capsys.readouterr().err  # the CLI's log goes to stderr
    assert "training data changed" in err and "train: same size, other contents" in err


def test_a_damaged_checkpoint_does_not_pass_on_torchs_weights_only_advice(tmp_path):
    from fractions import Fraction

    buffer = io.BytesIO()
    torch.save({"format": FORMAT, "x": Fraction(1, 2)}, buffer)
    payload = buffer.getvalue()
    import hashlib

    header = {"version": 2, "sha256": hashlib.sha256(payload).hexdigest(), "size": len(payload)}
    path = tmp_path / "last.pt"
    path.write_bytes(MAGIC + json.dumps(header).encode() + b"\n" + payload)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    assert "weights_only" not in str(info.value) and "last.pt" in str(info.value)


# ------------------------------------------------------------------------------- the writer
def test_writer_uses_the_umask_and_leaves_nothing_on_failure(tmp_path, monkeypatch):
    old = os.umask(0o027)
    try:
        write_atomic(tmp_path / "a.bin", b"x")
        save_dense(nn.Linear(2, 2), tmp_path / "m.safetensors")
    finally:
        os.umask(old)
    assert (tmp_path / "a.bin").stat().st_mode & 0o777 == 0o640
    assert (tmp_path / "m.safetensors").stat().st_mode & 0o777 == 0o640

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(aswl.io.os, "fsync", full)
    with pytest.raises(WriteError, match="disk is full: free some space") as info:
        write_atomic(tmp_path / "a.bin", b"new")
    assert "a.bin" in str(info.value) and "\n" not in str(info.value)
    assert (tmp_path / "a.bin").read_bytes() == b"x"  # the old file is intact
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "m.safetensors"]


@pytest.mark.parametrize("code,says", [(errno.EROFS, "read-only"), (errno.EACCES, "writable"),
                                       (errno.EFBIG, "ulimit -f"), (errno.EDQUOT, "quota")])
def test_os_errors_become_one_line_with_the_right_fix(tmp_path, monkeypatch, code, says):
    real = os.open

    def failing(path, flags, *args, **kwargs):
        if str(path).endswith(".tmp"):
            raise OSError(code, os.strerror(code), str(path))
        return real(path, flags, *args, **kwargs)

    monkeypatch.setattr(aswl.io.os, "open", failing)
    with pytest.raises(WriteError, match=says) as info:
        write_atomic(tmp_path / "f.bin", b"x")
    if code == errno.EFBIG:
        assert "writable" not in str(info.value)


def test_a_real_file_size_limit_gives_efbig_advice(tmp_path):
    script = textwrap.dedent(f"""
        import resource
        resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, 1 << 16))
        from aswl.io import WriteError, write_atomic
        try:
            write_atomic({str(tmp_path / 'big.bin')!r}, b"x" * (1 << 20))
        except WriteError as err:
            print(err)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                         env={**os.environ, "PYTHONPATH": SRC}, timeout=120).stdout
    assert "ulimit -f" in out and "writable" not in out
    assert os.listdir(tmp_path) == []


def test_symlink_loop_and_folder_targets_are_named(tmp_path):
    loop = tmp_path / "loop"
    loop.symlink_to(loop)
    with pytest.raises(WriteError, match="symbolic link loop"):
        write_atomic(loop / "x.bin", b"x")
    with pytest.raises(WriteError, match="symbolic link loop"):
        write_atomic(loop, b"x")
    (tmp_path / "folder").mkdir()
    with pytest.raises(WriteError, match="is a folder"):
        write_atomic(tmp_path / "folder", b"x")


def test_leftover_temporaries_of_dead_writers_are_removed_live_ones_kept(tmp_path):
    target = tmp_path / "model.sparse.safetensors"
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True).stdout.strip()
    stale = tmp_path / f"{target.name}.{dead}.0a1b2c3d.tmp"
    live = tmp_path / f"{target.name}.{os.getppid()}.0a1b2c3d.tmp"
    for path in (stale, live):
        path.write_bytes(b"\0")
    assert remove_temp_files(target) == [stale]
    assert live.exists()


def test_export_errors_are_one_line_and_clean_up_after_kill9(finished, tmp_path, capsys):
    out = copy_run(finished, tmp_path)
    assert main(["export", str(out), "--no-eval", "--out", str(tmp_path)]) == 2
    line = error_line(capsys)
    assert "is a folder" in line and "--resume" not in line
    target = tmp_path / "m.sparse.safetensors"
    stale = tmp_path / f"{target.name}.999999999.0a1b2c3d.tmp"  # what kill -9 leaves
    stale.write_bytes(b"\0" * 100)
    assert main(["export", str(out), "--no-eval", "--out", str(target)]) == 0
    assert not stale.exists() and target.is_file()


def test_train_seconds_survive_a_failed_final_write_and_resume(finished, tmp_path,
                                                              monkeypatch, capsys):
    out = tmp_path / "r"
    real = aswl.export.compact.write_safetensors

    def full_disk(tensors, metadata, path):
        if Path(path).name == "model.safetensors":
            raise WriteError(aswl.io.explain(OSError(errno.ENOSPC, "full"), path))
        return real(tensors, metadata, path)

    monkeypatch.setattr(aswl.export.compact, "write_safetensors", full_disk)
    assert main(["train", "--out", str(out), "--set", *TINY]) == 2
    line = error_line(capsys)
    assert "model.safetensors" in line and "disk is full" in line and "--resume" in line
    monkeypatch.setattr(aswl.export.compact, "write_safetensors", real)
    assert main(["train", "--out", str(out), "--resume"]) == 0
    report = json.loads((out / "report.json").read_text())
    epochs = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert report["train_seconds"] == pytest.approx(sum(e["seconds"] for e in epochs))
    assert report["train_seconds"] > 1e-3


def test_compare_write_errors_do_not_advise_resume(tmp_path, monkeypatch, capsys):
    def full(args):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "results.csv"))

    monkeypatch.setattr(aswl.cli, "cmd_compare", full)
    assert main(["compare", "--methods", "dense", "--sparsities", "0.9", "--out",
                 str(tmp_path)]) == 2
    line = error_line(capsys)
    assert "--resume" not in line and "same command again" in line and "results.csv" in line


def test_write_safetensors_is_what_save_dense_writes(tmp_path):
    net = nn.Linear(3, 3)
    save_dense(net, tmp_path / "a.safetensors")
    write_safetensors(dict(net.state_dict()), None, tmp_path / "b.safetensors")
    assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.safetensors").read_bytes()
