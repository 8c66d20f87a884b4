"""Console output: a progress bar on a terminal only; piped output is plain lines."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from pathlib import Path

import pytest

import aswl
from aswl.cli import main

TINY = ["data.limit_train=64", "data.limit_test=32", "batch_size=16", "epochs=2"]


@pytest.mark.slow  # a whole `aswl train` in a fresh interpreter
def test_piped_output_has_no_carriage_returns(tmp_path: Path) -> None:
    env = dict(os.environ, PYTHONPATH=str(Path(aswl.__file__).parents[1]), OMP_NUM_THREADS="1")
    result = subprocess.run(
        [sys.executable, "-m", "aswl", "train", "--out", str(tmp_path / "run"), "--set", *TINY],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, timeout=120, check=True)
    text = result.stdout.decode()
    assert "\r" not in text and "\x1b[" not in text  # no bar fragments, no cursor codes
    lines = text.splitlines()
    for epoch in (1, 2):  # one plain line per epoch
        assert sum(f"epoch {epoch}/2 " in line for line in lines) == 1, text


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


@pytest.mark.slow  # a whole run with the bar
def test_a_terminal_gets_the_bar(tmp_path: Path, monkeypatch) -> None:
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["train", "--out", str(tmp_path / "run"), "--set", *TINY]) == 0
    assert "\r" in terminal.getvalue()  # tqdm redraws in place
    terminal = FakeTerminal()
    monkeypatch.setattr(sys, "stderr", terminal)
    assert main(["train", "--out", str(tmp_path / "off"), "--set", *TINY, "progress=false"]) == 0
    assert "\r" not in terminal.getvalue()
