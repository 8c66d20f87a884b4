"""Launcher variables (issue 22, class 3): read and checked in one place; a process either joins
a complete group, runs alone, or refuses with one line; a rendezvous has a timeout and
SIGTERM ends it."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from aswl.cli import main
from aswl.train.launch import Launch, LaunchError, join_group, read_launch, timeout_seconds

SRC = str(Path(__file__).resolve().parents[2] / "src")
LAUNCH_VARS = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT",
               "ASWL_DIST_TIMEOUT")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture
def clean_env(monkeypatch):
    for name in LAUNCH_VARS:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


@pytest.mark.parametrize("env,says", [
    ({"RANK": "1"}, "RANK=1 is set but WORLD_SIZE is not set"),
    ({"RANK": "1", "WORLD_SIZE": "1"}, "out of range"),
    ({"WORLD_SIZE": "2"}, "RANK is not set"),
    ({"WORLD_SIZE": "2", "RANK": "abc"}, "RANK='abc' is not an integer"),
    ({"WORLD_SIZE": "abc"}, "WORLD_SIZE='abc' is not an integer"),
    ({"WORLD_SIZE": "0"}, "out of range"),
    ({"WORLD_SIZE": "2", "RANK": "2"}, "RANK=2 is out of range"),
    ({"WORLD_SIZE": "2", "RANK": "1"}, "MASTER_ADDR and MASTER_PORT not set"),
    ({"WORLD_SIZE": "2", "RANK": "1", "MASTER_ADDR": "h", "MASTER_PORT": "99999"},
     "MASTER_PORT=99999 is out of range"),
    ({"ASWL_DIST_TIMEOUT": "-1"}, "ASWL_DIST_TIMEOUT"),
])
def test_unusable_launcher_variables_are_refused(env, says):
    with pytest.raises(LaunchError, match=says):
        read_launch(env)


def test_usable_combinations(caplog):
    assert read_launch({}) == Launch()
    assert read_launch({"RANK": "0", "WORLD_SIZE": "1"}) == Launch()
    with caplog.at_level(logging.WARNING):
        assert read_launch({"LOCAL_RANK": "3", "MASTER_PORT": "1234"}) == Launch()
    assert "ignored, this is a single-process run" in caplog.text
    full = {"RANK": "1", "WORLD_SIZE": "4", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
            "MASTER_PORT": "29500"}
    assert read_launch(full) == Launch(1, 4, 1)
    assert read_launch({"RANK": "1", "WORLD_SIZE": "2"}, group_ready=True) == Launch(1, 2, 0)
    assert timeout_seconds({"ASWL_DIST_TIMEOUT": "2.5"}) == 2.5


def test_a_stray_rank_1_is_refused_before_touching_the_folder(tmp_path, clean_env, capsys):
    clean_env.setenv("RANK", "1")
    out = tmp_path / "r"
    assert main(["train", "--out", str(out), "--set", "epochs=1", "progress=false"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and "error: RANK=1 is set" in err
    assert not out.exists()  # no lock skipped, no file written


@pytest.mark.parametrize("env", [{"WORLD_SIZE": "2"}, {"WORLD_SIZE": "2", "RANK": "abc"}])
def test_half_set_groups_are_one_line_errors(tmp_path, clean_env, capsys, env):
    for name, value in env.items():
        clean_env.setenv(name, value)
    assert main(["train", "--out", str(tmp_path / "r"), "--set", "epochs=1"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err and err.count("error: ") == 1


def test_a_rendezvous_nobody_joins_times_out_with_a_clear_error(clean_env):
    clean_env.setenv("MASTER_ADDR", "127.0.0.1")
    clean_env.setenv("MASTER_PORT", str(free_port()))
    clean_env.setenv("ASWL_DIST_TIMEOUT", "1")
    with pytest.raises(LaunchError, match="could not join the process group .* within 1s"):
        join_group(Launch(1, 2, 0), "gloo")


def test_sigterm_ends_a_waiting_rendezvous(tmp_path):
    script = textwrap.dedent("""
        import signal, sys
        import torch.distributed  # imported before "waiting": the wait starts at once
        from aswl.cli import _raise_terminated
        from aswl.train.launch import Launch, join_group
        signal.signal(signal.SIGTERM, _raise_terminated)  # as `aswl train` installs it
        print("waiting", flush=True)
        join_group(Launch(1, 2, 0), "gloo")
    """)
    env = {**os.environ, "PYTHONPATH": SRC, "MASTER_ADDR": "127.0.0.1",
           "MASTER_PORT": str(free_port()), "ASWL_DIST_TIMEOUT": "300"}
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True,
                            env=env)
    try:
        assert proc.stdout.readline().strip() == "waiting"
        time.sleep(1.0)  # let it enter the wait
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == -signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
