"""aswl eval RUN --set ...: score a finished run on other data or another device."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from aswl.cli import main

sys.path.insert(0, str(Path(__file__).parent / "data"))
from data_writers import IDX_NAMES, write_idx  # noqa: E402

TINY = ["progress=false", "data.limit_train=64", "data.limit_test=48", "batch_size=32",
        "epochs=1"]


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("eval") / "run"
    assert main(["train", "--out", str(out), "--set", *TINY]) == 0
    return out


def scores(capsys, *args: str) -> dict:
    capsys.readouterr()
    assert main(["eval", *args]) == 0
    return json.loads(capsys.readouterr().out)


def test_eval_on_other_data_and_device(run: Path, tmp_path: Path, capsys) -> None:
    own = scores(capsys, str(run))
    report = json.loads((run / "report.json").read_text())
    assert own["test_accuracy"] == pytest.approx(report["test_accuracy"])
    assert own["test_samples"] == 48 and own["device"] == "cpu"
    fewer = scores(capsys, str(run), "--set", "data.limit_test=20", "device=cpu")
    assert fewer["test_samples"] == 20
    # another dataset of the same shape, from another folder (here: Fashion-MNIST IDX files)
    rng = np.random.default_rng(0)
    for split, n in (("train", 10), ("test", 30)):
        write_idx(tmp_path / IDX_NAMES[f"{split}_images"],
                  rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8))
        write_idx(tmp_path / IDX_NAMES[f"{split}_labels"], (np.arange(n) % 10).astype(np.uint8))
    other = scores(capsys, str(run), "--set", "dataset=fashion-mnist", f"data.root={tmp_path}",
                   "data.limit_test=null")
    assert other["dataset"] == "fashion-mnist" and other["test_samples"] == 30
    assert 0.0 <= other["test_accuracy"] <= 1.0


def test_eval_refuses_what_it_cannot_change(run: Path, capsys) -> None:
    capsys.readouterr()
    assert main(["eval", str(run), "--set", "model=lenet5"]) == 2
    assert "only dataset, data.*, device" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert main(["eval", str(run), "--set", "device=cuda"]) == 2
        assert "no CUDA device" in capsys.readouterr().err
