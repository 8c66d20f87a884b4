"""Helpers the tests share (imported as ``from helpers import ...``: pytest puts tests/ on the
path for tests/conftest.py)."""

from __future__ import annotations

import io
from typing import Any

import torch


def error_line(capsys: Any) -> str:
    """The one ``error: ...`` line a failed command printed (and no traceback)."""
    err = capsys.readouterr().err
    assert "Traceback" not in err
    lines = [line for line in err.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1, err
    return lines[0]


def roundtrip(state: dict[str, Any]) -> dict[str, Any]:
    """``state`` through torch.save and torch.load(weights_only=True), as a checkpoint."""
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)
