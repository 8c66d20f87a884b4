"""`aswl export` and `aswl bench` on a run folder and on a plain model file; ONNX with sparse
initializers when onnxruntime is installed; clear errors for bad input."""

import json

import pytest
import torch
from torch import nn

from aswl.cli import main
from aswl.export import save_dense
from aswl.export.deploy import load_source
from aswl.models import create_model

TINY = ["progress=false", "data.limit_train=192", "data.limit_test=96", "batch_size=32",
        "epochs=1", "method.target_sparsity=0.95"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "r"
    assert main(["train", "--out", str(out), "--set", *TINY]) == 0
    return out


@pytest.fixture
def model_file(tmp_path):
    torch.manual_seed(0)
    model = create_model("lenet300", num_classes=10, input_shape=(1, 28, 28))
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.Linear):
                module.weight.mul_(torch.rand_like(module.weight) < 0.05)
    path = tmp_path / "plain.safetensors"
    save_dense(model, path)
    return model, path


def test_export_run_compact_quantized_reports_accuracy(run_dir, capsys):
    assert main(["export", str(run_dir), "--quantize", "kmeans6"]) == 0
    out = run_dir / "model.sparse.kmeans6.safetensors"
    assert out.is_file() and "model.sparse.kmeans6.safetensors" in capsys.readouterr().out
    report = json.loads((run_dir / "report.json").read_text())
    row = report["exports"][out.name]
    assert row["bytes"] == out.stat().st_size and row["ratio"] > 20
    assert abs(row["test_accuracy"] - report["test_accuracy"]) < 0.05
    assert main(["eval", str(run_dir), "--compact"]) == 0  # the trainer's v2 file loads


def test_export_plain_file_every_format(model_file, tmp_path):
    model, path = model_file
    for fmt, quantize in [("compact", "none"), ("compact", "int8"), ("safetensors", "fp16")]:
        out = tmp_path / f"{fmt}-{quantize}.safetensors"
        assert main(["export", str(path), "--model", "lenet300", "--format", fmt,
                     "--quantize", quantize, "--out", str(out)]) == 0
        back = load_source(out, "lenet300").model
        x = torch.randn(3, 1, 28, 28)
        with torch.no_grad():
            diff = (back(x) - model(x)).abs().max().item()
        assert diff < (1e-6 if quantize == "none" else 0.05), (fmt, quantize)
    assert (tmp_path / "compact-none.safetensors").stat().st_size < path.stat().st_size / 8


def test_export_bad_input_gives_one_line_errors(model_file, tmp_path, capsys):
    _, path = model_file
    cases = [
        (["export", str(path)], "--model"),
        (["export", str(path), "--model", "lenet300", "--quantize", "int3"], "int3"),
        (["export", str(path), "--model", "lenet300", "--format", "safetensors", "--quantize",
          "kmeans4"], "--format compact"),
        (["export", str(tmp_path / "nothing")], "not found"),
        (["export", str(path), "--model", "lenet300", "--out", str(path), "--format",
          "safetensors"], "overwrite"),
        (["bench", str(path), "--model", "lenet300", "--batch", "a"], "--batch"),
    ]
    for args, fragment in cases:
        assert main(args) == 2, args
        err = capsys.readouterr().err
        assert err.startswith("error:") and fragment in err and "Traceback" not in err
    truncated = tmp_path / "t.safetensors"
    truncated.write_bytes(path.read_bytes()[:1000])
    assert main(["export", str(truncated), "--model", "lenet300"]) == 2
    assert "truncated or corrupt" in capsys.readouterr().err


def test_bench_prints_latency_and_size_tables(model_file, capsys, tmp_path):
    _, path = model_file
    assert main(["bench", str(path), "--model", "lenet300", "--batch", "1,8", "--repeats",
                 "3", "--json", str(tmp_path / "b.json")]) == 0
    out = capsys.readouterr().out
    assert "| 8 |" in out and "compact v2, lossless" in out
    result = json.loads((tmp_path / "b.json").read_text())
    assert [row["batch"] for row in result["rows"]] == [1, 8]
    assert all(row["max_abs_diff"] < 1e-5 for row in result["rows"])


def test_onnx_export_sparse_initializers_load_and_match(model_file, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    onnx = pytest.importorskip("onnx")
    from aswl.export.onnx_export import run_session, session

    model, path = model_file
    out = tmp_path / "m.onnx"
    assert main(["export", str(path), "--model", "lenet300", "--format", "onnx", "--out",
                 str(out)]) == 0
    proto = onnx.load(str(out))
    assert len(proto.graph.sparse_initializer) == 3
    assert out.stat().st_size < path.stat().st_size / 5
    x = torch.randn(5, 1, 28, 28)
    with torch.no_grad():
        expected = model(x).numpy()
    assert abs(run_session(session(out), x) - expected).max() < 1e-5
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(out.read_bytes()[: out.stat().st_size // 2])
    from aswl.export import ExportError

    with pytest.raises(ExportError, match="corrupt or truncated"):
        session(bad)


def test_bench_and_export_sizes_are_bounded_before_anything_is_allocated(model_file,
                                                                        cli_error, monkeypatch):
    _, path = model_file
    source = [str(path), "--model", "lenet300"]
    assert "--batch must be in [1, 65,536]" in cli_error(["bench", *source, "--batch",
                                                          "1,100000000"])
    assert "--threads must be in" in cli_error(["bench", *source, "--threads", "100000"])
    line = cli_error(["export", *source, "--input-shape", "1,30000,30000"])
    assert "--input-shape" in line and "too large" in line and "67,108,864" in line
    assert "give integers" in cli_error(["export", *source, "--input-shape", "1,2x,3"])
    monkeypatch.setattr("aswl.cli_export.MAX_BATCH_VALUES", 1000)
    line = cli_error(["bench", *source, "--batch", "1,64"])  # 64 x 784 input values
    assert "--batch 64 of inputs (1, 28, 28) is 50,176 input values, more than 1,000" in line
    assert "num_classes must be an int in [1, 1,000,000]" in cli_error(
        ["export", *source, "--num-classes", "10000000000"])
