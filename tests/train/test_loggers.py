"""Metric logs: jsonl, csv and TensorBoard, one entry per epoch, trimmed on resume."""

from __future__ import annotations

import csv
import json

import pytest

from aswl.cli import main

TINY = ["progress=false", "data.limit_train=64", "data.limit_test=32", "batch_size=32",
        "epochs=3"]


def test_jsonl_and_csv_agree(tmp_path) -> None:
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--set", *TINY, "log=[jsonl, csv]"]) == 0
    records = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    with open(out / "metrics.csv", newline="") as file:
        rows = list(csv.DictReader(file))
    assert [int(r["epoch"]) for r in rows] == [r["epoch"] for r in records] == [1, 2, 3]
    for row, record in zip(rows, records):
        assert float(row["test_accuracy"]) == pytest.approx(record["test_accuracy"])
        for layer, value in record["attentions"].items():
            assert float(row[f"attention/{layer}"]) == pytest.approx(value)
    assert "\r" not in (out / "metrics.csv").read_text().replace("\r\n", "\n")


def test_only_the_chosen_logs_and_bad_names(tmp_path, capsys) -> None:
    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--set", *TINY, "epochs=1", "log=[csv]"]) == 0
    assert (out / "metrics.csv").is_file() and not (out / "metrics.jsonl").exists()
    capsys.readouterr()
    assert main(["train", "--out", str(tmp_path / "bad"), "--set", *TINY, "log=[wandb]"]) == 2
    err = capsys.readouterr().err
    assert "log" in err and "tensorboard" in err and "Traceback" not in err


def test_tensorboard_events(tmp_path) -> None:
    pytest.importorskip("tensorboard")
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    out = tmp_path / "run"
    assert main(["train", "--out", str(out), "--set", *TINY, "log=[tensorboard]"]) == 0
    events = EventAccumulator(str(out / "tensorboard"))
    events.Reload()
    tags = events.Tags()["scalars"]
    assert "test_accuracy" in tags and "global_sparsity" in tags
    assert any(tag.startswith("attention/") for tag in tags)
    assert [e.step for e in events.Scalars("test_accuracy")] == [1, 2, 3]


def test_tensorboard_missing_is_a_clear_error(tmp_path, monkeypatch, capsys) -> None:
    import sys

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # import fails
    assert main(["train", "--out", str(tmp_path / "run"), "--set", *TINY,
                 "log=[tensorboard]"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert "aswl[tensorboard]" in last
