"""Limits before work: tiny inputs (configs, compact files) cannot cost memory or time, and
every declaration of a model file is checked before it is trusted (issue 22, class 1)."""

from __future__ import annotations

import json
import tracemalloc

import pytest
import torch
from helpers import error_line
from safetensors import safe_open
from safetensors.torch import load_file
from torch import nn

import aswl.export.compact as compact
from aswl.cli import main
from aswl.config import ConfigError, load_config
from aswl.export import ExportError, load_compact, load_compact_state, save_compact
from aswl.export.compact import write_safetensors
from aswl.export.verify import SHA_KEY

BOMB = ('a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
        + "".join(f"{n}: &{n} [{','.join([f'*{p}'] * 9)}]\n"
                  for p, n in zip("abcdefgh", "bcdefghi"))
        + "lr: [" + ",".join(["*i"] * 9) + "]\n")




# ------------------------------------------------------------------------------ YAML configs
def test_alias_bomb_is_refused_at_once_with_a_short_message(tmp_path, capsys):
    path = tmp_path / "bomb.yaml"
    path.write_text(BOMB)
    assert len(BOMB) < 600  # 9**9 "lol"s if expanded
    tracemalloc.start()
    try:
        code = main(["config", "--config", str(path)])
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert code == 2
    line = error_line(capsys)
    assert "aliases" in line and len(line) < 300
    assert peak < 300 * 2**20


def test_deep_nesting_and_huge_configs_are_clear_errors(tmp_path, capsys):
    deep = tmp_path / "deep.yaml"
    deep.write_text("lr: " + "[" * 100_000 + "]" * 100_000)
    assert main(["config", "--config", str(deep)]) == 2
    assert "nested deeper than" in error_line(capsys)
    big = tmp_path / "big.yaml"
    big.write_text("lr: [" + "1," * 1_000_000 + "1]\n")
    assert main(["config", "--config", str(big)]) == 2
    assert "a config may hold" in error_line(capsys)
    with pytest.raises(ConfigError, match="cannot be read"):
        load_config(None, ["lr=" + "9" * 5000])


def test_error_messages_cut_huge_values(capsys):
    assert main(["config", "--set", "lr=" + "x" * 100_000]) == 2
    line = error_line(capsys)
    assert "lr = " in line and len(line) < 400
    assert main(["config", "--set", f"seed=[{','.join(['1'] * 50_000)}]"]) == 2
    assert len(error_line(capsys)) < 400


@pytest.mark.parametrize("value,says", [("[[x]]", "include[0]"), ("[1]", "include[0]"),
                                        ("[fc, 2]", "include[1]")])
def test_list_options_are_checked_element_by_element(value, says):
    with pytest.raises(ConfigError, match=rf"{says.replace('[', '.').replace(']', '.')}.*"
                                          "wrong type: expected str"):
        load_config(None, [f"method.include={value}"])


@pytest.mark.parametrize("setting,says", [("batch_size=9223372036854775808", "batch_size"),
                                          ("data.workers=-3", "data.workers"),
                                          ("epochs=10000000000", "epochs")])
def test_absurd_sizes_are_refused(setting, says):
    with pytest.raises(ConfigError, match=says):
        load_config(None, [setting])


# ---------------------------------------------------------------------------- compact files
class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(40, 30)
        self.out = nn.Linear(30, 10)

    def forward(self, x):
        return self.out(torch.relu(self.fc(x)))


LAYERS = ["fc", "out"]


def pruned() -> Net:
    torch.manual_seed(0)
    net = Net()
    with torch.no_grad():
        for layer in (net.fc, net.out):
            layer.weight[torch.rand_like(layer.weight) < 0.8] = 0
    return net


def parts(path):
    with safe_open(str(path), framework="pt") as handle:
        metadata = dict(handle.metadata())
    metadata.pop(SHA_KEY, None)
    return load_file(str(path)), metadata


@pytest.fixture
def no_decoding(monkeypatch):
    """Fail the test if a stream is decoded: refusals must come before any allocation."""
    def refuse(*args, **kwargs):
        raise AssertionError("decoded a file that should have been refused first")

    monkeypatch.setattr(compact, "_decode_v2", refuse)
    monkeypatch.setattr(compact, "_decode_v1", refuse)


@pytest.mark.parametrize("version", [1, 2])
def test_a_declared_50m_weight_tensor_is_refused_before_decoding(tmp_path, version, no_decoding):
    good = tmp_path / "good.safetensors"
    save_compact(pruned(), LAYERS, good, version=version)
    tensors, metadata = parts(good)
    key = "aswl_sparse_shapes" if version == 1 else "aswl_layout"
    declared = json.loads(metadata[key])
    if version == 1:
        declared["fc.weight"] = [50_000_000]
    else:
        declared["fc.weight"]["shape"] = [50_000, 1000]
    crafted = tmp_path / "crafted.safetensors"
    write_safetensors(tensors, {**metadata, key: json.dumps(declared)}, crafted)  # valid SHA
    assert crafted.stat().st_size < 20_000
    with pytest.raises(ExportError, match="does not match the model"):
        load_compact(Net(), crafted)
    with pytest.raises(ExportError, match="declares 50,0|expected 6250000"):  # no model
        load_compact_state(crafted)


@pytest.mark.parametrize("change,says", [
    (lambda m: {**m, "aswl_layout": "[1, 2]"}, "aswl_layout is not a JSON object"),
    (lambda m: {**m, "aswl_layout": '"text"'}, "aswl_layout is not a JSON object"),
    (lambda m: {**m, "aswl_cast": "[]"}, "aswl_cast is not a JSON object"),
])
def test_metadata_of_the_wrong_json_type_is_a_clear_error(tmp_path, change, says, no_decoding):
    good = tmp_path / "good.safetensors"
    save_compact(pruned(), LAYERS, good)
    tensors, metadata = parts(good)
    bad = tmp_path / "bad.safetensors"
    write_safetensors(tensors, change(metadata), bad)
    with pytest.raises(ExportError, match=says):
        load_compact(Net(), bad)


@pytest.mark.parametrize("scale", [float("inf"), float("nan"), -1.0, 0.0, "x", True])
def test_an_int8_scale_that_is_not_finite_positive_is_refused(tmp_path, scale, no_decoding):
    good = tmp_path / "int8.safetensors"
    save_compact(pruned(), LAYERS, good, quantize="int8")
    tensors, metadata = parts(good)
    layout = json.loads(metadata["aswl_layout"])
    layout["out.weight"]["values"]["scale"] = scale
    bad = tmp_path / "bad.safetensors"
    write_safetensors(tensors, {**metadata, "aswl_layout": json.dumps(layout)}, bad)
    with pytest.raises(ExportError, match="int8 scale"):
        load_compact(Net(), bad)


def test_negative_or_out_of_range_v1_indices_are_refused(tmp_path):
    net = Net()
    with torch.no_grad():  # 99% sparse: v1 stores int32 indices
        for layer in (net.fc, net.out):
            layer.weight.zero_()
            layer.weight.view(-1)[:3] = 1.0
    good = tmp_path / "v1.safetensors"
    save_compact(net, LAYERS, good, version=1)
    tensors, metadata = parts(good)
    assert "fc.weight::indices" in tensors
    for index in (-1, 10_000):
        bad_tensors = dict(tensors)
        bad_tensors["fc.weight::indices"] = tensors["fc.weight::indices"].clone()
        bad_tensors["fc.weight::indices"][0] = index
        bad = tmp_path / f"bad{index}.safetensors"
        write_safetensors(bad_tensors, metadata, bad)
        with pytest.raises(ExportError, match="outside"):
            load_compact(Net(), bad)


def test_a_header_claiming_more_than_the_file_is_refused(tmp_path):
    path = tmp_path / "huge.safetensors"
    path.write_bytes((10**12).to_bytes(8, "little") + b"{}")
    with pytest.raises(ExportError, match="header claims"):
        load_compact(Net(), path)
    header = json.dumps({"x": {"dtype": "F32", "shape": [10**9], "data_offsets": [0, 16]}})
    path.write_bytes(len(header).to_bytes(8, "little") + header.encode() + b"\0" * 16)
    with pytest.raises(ExportError, match="bad dtype, shape or byte range"):
        load_compact(Net(), path)


# ------------------------------------------------------------------------- deep JSON anywhere
def test_deeply_nested_json_in_report_and_checkpoint_header_is_a_clear_error(tmp_path, capsys):
    from aswl.train import CheckpointError, load_checkpoint
    from aswl.train.checkpoint import MAGIC

    run = tmp_path / "run"
    run.mkdir()
    (run / "report.json").write_text("[" * 100_000 + "]" * 100_000)
    assert main(["report", str(run)]) == 2
    assert "cannot be read as JSON" in error_line(capsys)
    checkpoint = tmp_path / "last.pt"
    checkpoint.write_bytes(MAGIC + b"[" * 3000 + b"\n" + b"payload")
    with pytest.raises(CheckpointError, match="damaged header"):
        load_checkpoint(checkpoint)
