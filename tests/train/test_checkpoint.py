"""Hardening (issue 10): checksummed checkpoints, one writer per run folder, leftovers, signals,
and bad input that must end in a one-line error before training, never a traceback."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from helpers import error_line

import aswl.io
import aswl.train.checkpoint as checkpoint
from aswl.cli import main
from aswl.runs import RunDirError, run_directory
from aswl.train import CheckpointError, load_checkpoint, save_checkpoint
from aswl.train.checkpoint import read_checkpoint_header
from aswl.train.loop import Trainer

TINY = ["progress=false", "data.limit_train=96", "data.limit_test=64", "batch_size=32",
        "epochs=2", "method.target_sparsity=0.9"]
SRC = str(Path(__file__).resolve().parents[2] / "src")


def run(out: Path, *extra: str, resume: bool = False) -> int:
    return main(["train", "--out", str(out), "--set", *TINY, *extra]
                + (["--resume"] if resume else []))


@pytest.fixture
def epochs_trained(monkeypatch) -> list[int]:
    """Counts the epochs that start training (to prove that a check came before them)."""
    calls: list[int] = []
    original = Trainer.train_epoch

    def counting(self):
        calls.append(self.epoch)
        return original(self)

    monkeypatch.setattr(Trainer, "train_epoch", counting)
    return calls




# ---------------------------------------------------------------- 5: checksummed checkpoints
def test_bit_flipped_checkpoint_is_refused_naming_the_file(tmp_path, capsys):
    state = {"epoch": 3, "weight": torch.randn(64, 64)}
    path = tmp_path / "last.pt"
    save_checkpoint(state, path)
    assert read_checkpoint_header(path)["epoch"] == 3
    assert torch.equal(load_checkpoint(path)["weight"], state["weight"])
    blob = bytearray(path.read_bytes())
    blob[len(blob) // 2] ^= 0x10  # one flipped bit inside the payload
    path.write_bytes(bytes(blob))
    with pytest.raises(CheckpointError, match="checksum does not match") as info:
        load_checkpoint(path)
    assert str(path) in str(info.value)
    path.write_bytes(path.read_bytes()[:-100])  # truncated
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(path)


def test_bit_flipped_checkpoint_stops_resume(tmp_path, capsys, epochs_trained):
    out = tmp_path / "r"
    assert run(out, "epochs=1") == 0
    path = out / "checkpoints" / "last.pt"
    blob = bytearray(path.read_bytes())
    blob[-5000] ^= 0x01
    path.write_bytes(bytes(blob))
    capsys.readouterr()
    epochs_trained.clear()
    assert run(out, "epochs=2", resume=True) == 2
    line = error_line(capsys)
    assert "checksum does not match" in line and str(path) in line
    assert epochs_trained == []


def test_checkpoint_without_header_still_loads_with_a_warning(tmp_path, caplog):
    path = tmp_path / "old.pt"
    torch.save({"format": checkpoint.FORMAT, "epoch": 1}, path)
    assert load_checkpoint(path)["epoch"] == 1
    assert "no checksum" in caplog.text


def test_full_disk_while_checkpointing_is_a_clear_error(tmp_path, monkeypatch, capsys):
    out = tmp_path / "r"
    real_fsync = os.fsync
    writes = {"n": 0}

    def fsync(fd):
        if "last.pt" not in os.readlink(f"/proc/self/fd/{fd}"):
            return real_fsync(fd)  # config.yaml and the like go through the same writer
        writes["n"] += 1
        if writes["n"] >= 2:  # the first checkpoint is written, the second finds the disk full
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        return real_fsync(fd)

    monkeypatch.setattr(aswl.io.os, "fsync", fsync)
    assert run(out) == 2
    line = error_line(capsys)
    assert "disk is full" in line and "last.pt" in line and "--resume" in line
    assert load_checkpoint(out / "checkpoints" / "last.pt")["epoch"] == 1  # previous one intact
    assert not list((out / "checkpoints").glob("*.tmp"))


# ---------------------------------------------------------------- 3: one writer per folder
def test_second_writer_is_refused_while_the_first_holds_the_folder(tmp_path, capsys,
                                                                   epochs_trained):
    out = tmp_path / "r"
    with run_directory(out):
        assert run(out, "--overwrite") == 2
        line = error_line(capsys)
        assert "in use by another aswl run" in line and f"pid {os.getpid()}" in line
        with pytest.raises(RunDirError):
            with run_directory(out):
                pass
    assert epochs_trained == []
    assert not (out / "metrics.jsonl").exists()
    with run_directory(out):  # released on exit
        pass


def test_lock_of_a_killed_process_is_released(tmp_path):
    out = tmp_path / "r"
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from aswl.runs import run_directory
            with run_directory({str(out)!r}):
                print("locked", flush=True)
                time.sleep(60)
        """)], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": SRC})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(RunDirError, match=f"pid {holder.pid}"):
            with run_directory(out):
                pass
    finally:
        holder.kill()
        holder.wait()
    with run_directory(out):  # the kernel dropped the dead holder's lock
        pass


# ---------------------------------------------------------------- 8: leftovers and signals
def test_leftover_temp_files_removed_and_files_get_the_umask_mode(tmp_path):
    out = tmp_path / "r"
    (out / "checkpoints").mkdir(parents=True)
    leftovers = [out / "checkpoints" / "last.pt.4242.0a1b2c3d.tmp",
                 out / "checkpoints" / "last.ptq8x_2k.tmp"]  # the old mkstemp names
    for path in leftovers:
        path.write_bytes(b"\0" * 1000)
    mine = out / "notes.tmp"  # not ours: kept
    mine.write_text("keep")
    old = os.umask(0o022)
    try:
        assert run(out, "epochs=1") == 0
    finally:
        os.umask(old)
    assert not any(path.exists() for path in leftovers) and mine.exists()
    for name in ("checkpoints/last.pt", "metrics.jsonl", "report.json", "config.yaml"):
        assert (out / name).stat().st_mode & 0o777 == 0o644, name


def test_sigterm_stops_like_ctrl_c_and_says_what_is_kept(tmp_path, monkeypatch, capsys):
    original = Trainer.train_epoch

    def terminated_in_epoch_2(self):
        if self.epoch == 1:
            os.kill(os.getpid(), signal.SIGTERM)
        return original(self)

    monkeypatch.setattr(Trainer, "train_epoch", terminated_in_epoch_2)
    before = signal.getsignal(signal.SIGTERM)
    assert run(tmp_path / "r", "epochs=3") == 143
    assert signal.getsignal(signal.SIGTERM) is before
    err = capsys.readouterr().err
    assert "terminated (SIGTERM); the checkpoint of epoch 1 is kept" in err
    assert "--resume" in err and "Traceback" not in err
    assert load_checkpoint(tmp_path / "r" / "checkpoints" / "last.pt")["epoch"] == 1


def test_interrupted_first_write_does_not_duplicate_metrics(tmp_path):
    out = tmp_path / "r"
    assert run(out, "epochs=1") == 0
    (out / "checkpoints" / "last.pt").unlink()  # killed between metrics line and checkpoint
    (out / "report.json").unlink()
    assert run(out, resume=True) == 0
    lines = (out / "metrics.jsonl").read_text().splitlines()
    epochs = [json.loads(line)["epoch"] for line in lines]
    assert epochs == [1, 2]


# ---------------------------------------------------------------- 6: one-line errors
@pytest.mark.parametrize("content", [bytes(range(256)), "lr: 0.1\nname: café\n".encode("latin-1"),
                                     b"lr: 0.1\x00\n"])
def test_binary_or_non_utf8_config_file(tmp_path, capsys, content):
    path = tmp_path / "c.yaml"
    path.write_bytes(content)
    assert main(["train", "--config", str(path), "--out", str(tmp_path / "r")]) == 2
    assert str(path) in error_line(capsys)


def test_out_that_is_a_file_or_under_proc(tmp_path, capsys):
    (tmp_path / "file").write_text("x")
    for out, says in [(tmp_path / "file", "is a file"),
                      (tmp_path / "file" / "sub", "cannot create"),
                      (Path("/proc/aswl-test"), "cannot create")]:
        assert run(out) == 2
        line = error_line(capsys)
        assert says in line and str(out) in line


def test_read_only_out_is_found_before_training(tmp_path, monkeypatch, capsys, epochs_trained):
    out = tmp_path / "r"
    out.mkdir()
    real_open = os.open

    def read_only(path, flags, *args, **kwargs):  # what a read-only folder does, even to root
        if Path(path).parent == out and flags & os.O_CREAT:
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return real_open(path, flags, *args, **kwargs)

    monkeypatch.setattr(os, "open", read_only)
    assert run(out) == 2
    line = error_line(capsys)
    assert "Permission denied" in line and str(out) in line
    assert epochs_trained == []


def test_directory_or_read_only_last_pt_is_found_before_training(tmp_path, monkeypatch, capsys,
                                                                   epochs_trained):
    out = tmp_path / "r"
    (out / "checkpoints" / "last.pt").mkdir(parents=True)
    assert run(out) == 2
    assert "last.pt' is not a regular file" in error_line(capsys)
    (out / "checkpoints" / "last.pt").rmdir()
    (out / "checkpoints" / "last.pt").write_bytes(b"")
    (out / "checkpoints" / "last.pt").chmod(0o444)
    real_access = os.access
    monkeypatch.setattr(os, "access", lambda path, mode, **kw: (
        not (str(path).endswith("last.pt") and mode & os.W_OK)) and real_access(path, mode))
    assert run(out) == 2
    assert "last.pt' is read-only" in error_line(capsys)
    assert epochs_trained == []


def test_idx_files_with_zero_images(tmp_path, capsys):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "data"))
    from data_writers import IDX_NAMES, write_idx

    data = tmp_path / "data"
    data.mkdir()
    for key, count in (("train", 0), ("test", 3)):
        write_idx(data / IDX_NAMES[f"{key}_images"], np.zeros((count, 28, 28), np.uint8))
        write_idx(data / IDX_NAMES[f"{key}_labels"], np.zeros(count, np.uint8))
    assert run(tmp_path / "r", "dataset=mnist", f"data.root={data}") == 2
    assert "holds 0 images" in error_line(capsys)


@pytest.mark.parametrize("content, says", [
    (b"garbage", "cannot be read as JSON"), (b"[]", "JSON list"), (b"{}", "lacks the entry"),
    (b'{"layers": 3}', "wrong type"), (b"\xff\xfe", "cannot be read as JSON")])
def test_report_on_a_damaged_report_json(tmp_path, capsys, content, says):
    (tmp_path / "report.json").write_bytes(content)
    assert main(["report", str(tmp_path)]) == 2
    line = error_line(capsys)
    assert says in line and "report.json" in line


# ---------------------------------------------------------------- 2: resume trains the same run
def test_resume_reads_the_runs_own_config_from_the_checkpoint(tmp_path, monkeypatch, capsys):
    out = tmp_path / "r"
    original = Trainer.train_epoch

    def interrupted(self):
        if self.epoch == 1:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "train_epoch", interrupted)
    assert run(out, "seed=5", "method.target_sparsity=0.8") == 130
    monkeypatch.setattr(Trainer, "train_epoch", original)
    (out / "config.yaml").unlink()  # e.g. killed before it was written, or deleted
    assert main(["train", "--out", str(out), "--resume"]) == 0  # no --set: all from the ckpt
    report = json.loads((out / "report.json").read_text())
    assert report["seed"] == 5 and report["epochs"] == 2
    assert report["global_sparsity"] == pytest.approx(0.8, abs=1e-4)
    assert report["dataset"] == "mnist-embedded" and report["prunable_weights"] == 266200
    capsys.readouterr()
    # a setting a resume may not change is refused, naming it
    assert main(["train", "--out", str(out), "--resume", "--set", "seed=6", "batch_size=8"]) == 2
    line = error_line(capsys)
    assert "cannot change batch_size, seed" in line and "lr" in line


def test_resume_without_checkpoint_or_config_refuses(tmp_path, capsys, epochs_trained):
    out = tmp_path / "r"
    out.mkdir()
    assert main(["train", "--out", str(out), "--resume"]) == 2
    assert "no checkpoint and no config.yaml" in error_line(capsys)
    assert epochs_trained == []
    assert main(["train", "--resume"]) == 2
    assert "--resume needs --out" in error_line(capsys)


def test_ctrl_c_while_starting_is_one_line(tmp_path, monkeypatch, capsys):
    import aswl.runs as rundir

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(rundir, "run_directory", interrupted)
    assert run(tmp_path / "r") == 130
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.strip() == "interrupted"


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc")
def test_ctrl_c_in_the_first_second_of_the_command(tmp_path):
    proc = subprocess.Popen([sys.executable, "-m", "aswl", "train", "--out", str(tmp_path / "r")],
                            env={**os.environ, "PYTHONPATH": SRC, "OMP_NUM_THREADS": "1"},
                            stderr=subprocess.PIPE, text=True)
    import time

    maps = Path(f"/proc/{proc.pid}/maps")
    deadline = time.time() + 60
    while proc.poll() is None and time.time() < deadline:  # main() runs: torch is loading
        if "torch" in maps.read_text():
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130 and "Traceback" not in err, err


# ---------------------------------------------------------------- 4: NaN advice that works
def test_nan_message_names_the_real_checkpoint_and_its_advice_works(tmp_path, monkeypatch,
                                                                     capsys):
    import torch.nn.functional as F

    out = tmp_path / "r"
    real = F.cross_entropy
    state = {"epoch": 0, "lr": None}
    original = Trainer.train_epoch

    def tracking(self):
        state["epoch"], state["lr"] = self.epoch, self.config.lr
        return original(self)

    def poisoned(logits, labels):
        loss = real(logits, labels)
        diverges = state["epoch"] >= state["from"] and state["lr"] == 0.05
        return loss * float("nan") if diverges else loss

    monkeypatch.setattr(F, "cross_entropy", poisoned)
    monkeypatch.setattr(Trainer, "train_epoch", tracking)
    state["from"] = 0  # diverges in epoch 1: no checkpoint exists
    assert run(out, "epochs=3", "checkpoint_every=2") == 2
    line = error_line(capsys)
    assert "at epoch 1" in line and "no checkpoint was written yet" in line
    assert "(epoch 0)" not in line
    state["from"] = 2  # epoch 3 diverges; with checkpoint_every=2 the checkpoint is epoch 2
    assert run(out, "epochs=3", "checkpoint_every=2", "--overwrite") == 2
    line = error_line(capsys)
    assert "at epoch 3" in line and "(epoch 2)" in line
    command = line[line.index("aswl train"):line.index(" (a resume")].split()
    assert command[-2:] == ["lr=0.005", "grad_clip=1.0"]
    assert main(command[1:]) == 0  # the advice can be followed as printed
    assert json.loads((out / "report.json").read_text())["epochs"] == 3
    history = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [h["epoch"] for h in history] == [1, 2, 3]


# ---------------------------------------------------------------- 7: values refused before training
@pytest.mark.parametrize("setting, says", [
    ("lr=.inf", "finite"), ("lr=.nan", "finite"), ("weight_decay=.inf", "finite"),
    ("method.alpha=.inf", "finite"), ("method.attention_lr=.inf", "finite"),
    ("lr_gamma=-1", "(0, 1000]"), ("lr_gamma=0", "(0, 1000]"), ("lr_gamma=.nan", "finite"),
    ("warmup_epochs=.inf", "finite"), ("seed=99999999999999999999", "2**32"),
    ("seed=-1", "2**32")])
def test_bad_values_refused_before_training(tmp_path, capsys, epochs_trained, setting, says):
    assert run(tmp_path / "r", setting) == 2
    line = error_line(capsys)
    assert setting.split("=")[0] in line and says in line
    assert epochs_trained == []


def test_exponent_numbers_are_numbers(tmp_path):
    from aswl.config import load_config

    config = load_config(None, ["lr=1e-1", "epochs=2e0", "weight_decay=5E-4"])
    assert (config.lr, config.epochs, config.weight_decay) == (0.1, 2, 5e-4)
    path = tmp_path / "c.yaml"
    path.write_text("lr: 1e2\nepochs: 1e3\nmethod: {name: aswl, attention_lr: 1e-2}\n")
    config = load_config(path)
    assert (config.lr, config.epochs, config.method["attention_lr"]) == (1e2, 1000, 0.01)
    assert isinstance(config.epochs, int)
