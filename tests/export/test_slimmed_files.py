"""A channel-slimmed run end to end: train, report, files that rebuild the thinner model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from aswl.config import load_config
from aswl.export.compact import ExportError, file_metadata, load_weights
from aswl.export.deploy import bench, export_model, format_bench, load_source
from aswl.models import create_model
from aswl.sparse.channels import SLIM_KEY
from aswl.train.loop import train

pytest.importorskip("torch_pruning")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("channel_run")
    config = load_config(None, ["model=lenet5", "epochs=1", "method.structure=channel",
                                "method.target_sparsity=0.5", "data.limit_train=256",
                                "data.limit_test=128", "batch_size=64", "progress=false"])
    train(config, out)
    return out


def test_the_report_counts_the_removed_flops(run: Path) -> None:
    report = json.loads((run / "report.json").read_text())
    assert report["flops_sparse"] < 0.6 * report["flops_dense"]  # about half the FLOPs gone
    assert report["prunable_weights"] == 430_500  # the full-width model's weights
    conv1 = next(r for r in report["layers"] if r["name"] == "conv1")
    assert conv1["numel"] == 500 and conv1["nonzero"] < 500


def test_files_rebuild_the_slimmed_model(run: Path) -> None:
    assert SLIM_KEY in file_metadata(run / "model.safetensors")
    assert SLIM_KEY in file_metadata(run / "model.sparse.safetensors")
    source = load_source(run)
    assert source.full_width is not None
    assert source.model.conv1.out_channels < source.full_width.conv1.out_channels
    row = export_model(source, "compact", "fp16")
    assert row["test_accuracy"] is not None
    assert SLIM_KEY in file_metadata(row["file"])
    fresh = create_model("lenet5", num_classes=10, input_shape=(1, 28, 28))
    load_weights(fresh, row["file"])
    assert fresh.conv1.out_channels == source.model.conv1.out_channels


def test_bench_times_the_full_width_model_too(run: Path) -> None:
    result = bench(load_source(run, with_data=False), [2], repeats=2)
    assert result["rows"][0]["full_width_speedup"] > 0


def test_bench_compares_like_with_like(run: Path) -> None:
    """BatchNorm folded on both sides, and the file sizes against the full width."""
    source = load_source(run, with_data=False)
    result = bench(source, [2], repeats=2)
    text = format_bench(result)
    assert "BatchNorm folded into the convolutions on both sides" in text
    assert result["reference"] == "full-width fp32"
    full = sum(t.numel() * t.element_size() for t in source.full_width.state_dict().values())
    assert result["reference_bytes"] == full > result["dense_fp32_bytes"]
    assert "vs full-width fp32 tensors" in text and "(the reference)" not in text


def test_bench_reports_requested_against_measured(run: Path,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """The run's budget and target give the requested speedup; a latency budget missed by
    more than 10% is a warning with the numbers."""
    source = load_source(run, with_data=False)
    assert source.request == {"budget": "flops", "target_sparsity": 0.5}
    result = bench(source, [2], repeats=2)
    assert result["requested_speedup"] == pytest.approx(2.0)
    assert "requested (flops)" in format_bench(result)
    assert "latency budget missed" not in caplog.text  # flops: reported, never a warning
    source.request = {"budget": "latency", "target_sparsity": 0.99}  # 100x: surely missed
    with caplog.at_level("WARNING"):
        result = bench(source, [2], repeats=2)
    assert "latency budget missed at batch 2" in caplog.text
    assert "against 100.00x requested" in caplog.text


@pytest.mark.parametrize("record", [
    {"input_shape": [1, 28, 28], "removed": [1, 2]},
    {"input_shape": [1, 30000, 30000], "removed": {}},
    {"input_shape": [1, 28, 28.5], "removed": {}},
    {"input_shape": [1, 28, 28], "removed": {"conv1": [0, 0]}},
    {"input_shape": [1, 28, 28], "removed": {"conv1": [10 ** 9]}},
    {"input_shape": [1, 28, 28]},
])
def test_every_channel_record_field_is_checked_before_use(run: Path, tmp_path: Path,
                                                          record: dict) -> None:
    source = load_source(run, with_data=False)
    state = {k: v.contiguous() for k, v in source.model.state_dict().items()}
    path = tmp_path / "crafted.safetensors"
    save_file(state, str(path), metadata={SLIM_KEY: json.dumps(record)})
    with pytest.raises(ExportError, match="damaged"):
        load_weights(create_model("lenet5", num_classes=10, input_shape=(1, 28, 28)), path)


def test_a_damaged_channel_record_is_a_clear_error(run: Path, tmp_path: Path) -> None:
    source = load_source(run, with_data=False)
    state = {k: v.contiguous() for k, v in source.model.state_dict().items()}
    bad = tmp_path / "bad.safetensors"
    save_file(state, str(bad), metadata={SLIM_KEY: "{not json"})
    with pytest.raises(ExportError, match="damaged"):
        load_weights(create_model("lenet5", num_classes=10, input_shape=(1, 28, 28)), bad)
    other = tmp_path / "other.safetensors"
    save_file(state, str(other), metadata={SLIM_KEY: json.dumps(
        {"input_shape": [1, 28, 28], "removed": {"no.such.layer": [0]}})})
    with pytest.raises(ExportError, match="no.such.layer"):
        load_weights(create_model("lenet5", num_classes=10, input_shape=(1, 28, 28)), other)
    assert torch.is_tensor(state["conv1.weight"])
