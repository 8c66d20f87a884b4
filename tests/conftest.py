"""The tests run tiny models: one intra-op thread is faster than two busy ones."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest
import torch


@pytest.fixture(autouse=True)
def _one_thread() -> Iterator[None]:
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _latency_cache(tmp_path_factory: pytest.TempPathFactory,
                   monkeypatch: pytest.MonkeyPatch) -> None:
    """Latency tables (channel mode's ``budget: latency``) go to a temporary cache, never to
    ~/.cache/aswl."""
    if "ASWL_CACHE" not in os.environ:
        monkeypatch.setenv("ASWL_CACHE", str(tmp_path_factory.getbasetemp() / "aswl-cache"))


@pytest.fixture
def cli_error(capsys):
    """``cli_error(argv)``: run ``aswl argv``, check that it fails with exit status 2 and one
    ``error:`` line (no traceback), and return that line."""

    def run(argv: list[str]) -> str:
        from aswl.cli import main

        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert "Traceback" not in err
        lines = [line for line in err.splitlines() if line.startswith("error: ")]
        assert len(lines) == 1, err
        return lines[0]

    return run
