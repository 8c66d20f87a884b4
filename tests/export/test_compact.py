"""Compact format v2 (and v1): every position code and quantization round-trips, sizes approach
the mask's entropy, and corrupt or truncated files give a clear error."""

import json
import math

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from aswl.export import ExportError, load_compact, load_compact_state, save_compact
from aswl.export.codec import (
    CodecError,
    compress,
    decode_positions,
    decompress,
    encode_positions,
)
from aswl.export.compact import describe_compact


def masks():
    rng = np.random.default_rng(0)
    yield "empty", np.zeros(1000, bool)
    yield "full", np.ones(257, bool)
    yield "random 2%", rng.random(50_000) < 0.02
    yield "random 40%", rng.random(3000) < 0.4
    far = np.zeros(200_000, bool)
    far[[0, 1, 300, 70_000, 199_999]] = True  # gaps beyond both escapes
    yield "long gaps", far


@pytest.mark.parametrize("name,kept", list(masks()), ids=[n for n, _ in masks()])
def test_every_position_code_round_trips(name, kept):
    codes = set()
    for desc, raw in encode_positions(kept):
        codes.add(desc["code"])
        method, packed = compress(raw)
        back = decode_positions(desc, decompress(method, packed, len(raw)), kept.size,
                                int(kept.sum()))
        assert np.array_equal(back, np.flatnonzero(kept)), desc
    assert "bitmap" in codes and ("rice" in codes or not kept.any())


def test_rice_code_is_near_the_entropy_of_an_iid_mask():
    kept = np.random.default_rng(1).random(200_000) < 0.02
    p = kept.mean()
    entropy_bytes = kept.size * -(p * math.log2(p) + (1 - p) * math.log2(1 - p)) / 8
    best = min(len(compress(raw)[1]) for _, raw in encode_positions(kept))
    assert best < 1.05 * entropy_bytes
    assert best < kept.size / 8 / 5  # far below a bitmap


def test_corrupt_streams_raise_codec_errors():
    kept = np.random.default_rng(2).random(5000) < 0.05
    for desc, raw in encode_positions(kept):
        with pytest.raises(CodecError):
            decode_positions(desc, raw[: len(raw) // 2], kept.size, int(kept.sum()))
    method, packed = compress(bytes(range(256)) * 8)
    assert method != "raw"
    with pytest.raises(CodecError):
        decompress(method, packed[:-5] + b"xxxxx", 2048)
    with pytest.raises(CodecError):
        decompress(method, packed, 100)  # more data than declared


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(2, 8, 3)
        self.bn = nn.BatchNorm2d(8)
        self.fc = nn.Linear(8 * 6 * 6, 40)
        self.out = nn.Linear(40, 3)

    def forward(self, x):
        return self.out(self.fc(self.bn(self.conv(x)).flatten(1)))


LAYERS = ["conv", "fc", "out"]


@pytest.fixture
def pruned():
    torch.manual_seed(0)
    model = Net().eval()
    with torch.no_grad():
        model.conv.weight.mul_(torch.rand_like(model.conv.weight) > 0.5)
        model.fc.weight.mul_(torch.rand_like(model.fc.weight) > 0.97)
        # out stays dense: the "dense" code
        model.bn.running_mean.normal_()
    return model


def fresh():
    return Net().eval()


def test_v2_lossless_round_trip_is_exact_and_smaller_than_v1(pruned, tmp_path):
    v2 = save_compact(pruned, LAYERS, tmp_path / "v2.safetensors")
    v1 = save_compact(pruned, LAYERS, tmp_path / "v1.safetensors", version=1)
    assert v2 < v1
    for name in ("v1", "v2"):
        model = load_compact(fresh(), tmp_path / f"{name}.safetensors")
        for key, value in pruned.state_dict().items():
            assert torch.equal(model.state_dict()[key], value), (name, key)
    codes = {row["key"]: row["index"] for row in describe_compact(tmp_path / "v2.safetensors")}
    assert codes["out.weight"].startswith("dense")
    assert json.loads(load_file_metadata(tmp_path / "v2.safetensors")["aswl_compact_version"]) \
        == 2


def load_file_metadata(path):
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as handle:
        return handle.metadata()


@pytest.mark.parametrize("mode,tolerance", [("fp16", 1e-3), ("bf16", 8e-3), ("int8", None),
                                            ("kmeans4", None), ("kmeans8", None)])
def test_each_quantization_round_trips_and_keeps_the_mask(pruned, tmp_path, mode, tolerance):
    path = tmp_path / f"{mode}.safetensors"
    payload = save_compact(pruned, LAYERS, path, quantize=mode)
    lossless = save_compact(pruned, LAYERS, tmp_path / "fp32.safetensors")
    assert payload < lossless
    state = load_compact_state(path)
    for key in ("conv.weight", "fc.weight"):
        original, back = pruned.state_dict()[key], state[key]
        assert back.dtype == torch.float32
        assert torch.equal(back != 0, original != 0) or mode.startswith("kmeans")
        assert torch.all(back[original == 0] == 0)
        kept = original[original != 0]
        err = (back[original != 0] - kept).abs().max().item()
        peak = kept.abs().max().item()
        if mode == "int8":
            assert err <= peak / 127 / 2 + 1e-7
        elif mode.startswith("kmeans"):
            bits = int(mode[6:])
            assert back[original != 0].unique().numel() <= 2 ** bits
            assert err < (kept.max() - kept.min()).item() / 2 ** bits * 2
        else:
            assert err <= tolerance * peak
    model = load_compact(fresh(), path)  # loads into a float32 model
    assert model.fc.bias.dtype == torch.float32


def test_corrupt_and_truncated_compact_files_give_clear_errors(pruned, tmp_path):
    good = tmp_path / "good.safetensors"
    save_compact(pruned, LAYERS, good, quantize="kmeans5")
    data = good.read_bytes()
    cases = {"truncated": data[: len(data) - 40], "header only": data[:20],
             "flipped": data[:-30] + bytes([data[-30] ^ 0xFF]) + data[-29:]}
    for name, blob in cases.items():
        path = tmp_path / f"{name}.safetensors"
        path.write_bytes(blob)
        with pytest.raises(ExportError, match="corrupt"):
            load_compact(fresh(), path)
    with pytest.raises(ExportError, match="not found"):
        load_compact(fresh(), tmp_path / "missing.safetensors")
    plain = tmp_path / "plain.safetensors"
    save_file({"x": torch.zeros(2)}, str(plain))
    with pytest.raises(ExportError, match="not an aswl compact file"):
        load_compact(fresh(), plain)
    tensors = load_file(str(good))
    metadata = dict(load_file_metadata(good))
    newer = tmp_path / "v9.safetensors"
    save_file(tensors, str(newer), metadata={**metadata, "aswl_compact_version": "9"})
    with pytest.raises(ExportError, match="v9"):
        load_compact(fresh(), newer)
    layout = json.loads(metadata["aswl_layout"])
    layout["fc.weight"]["count"] += 1
    bad = tmp_path / "layout.safetensors"
    save_file(tensors, str(bad), metadata={**metadata, "aswl_layout": json.dumps(layout)})
    with pytest.raises(ExportError, match="corrupt"):
        load_compact(fresh(), bad)
    with pytest.raises(ExportError, match="does not match"):
        load_compact(nn.Linear(3, 3), good)


def test_unknown_quantization_and_version_are_refused(pruned, tmp_path):
    with pytest.raises(ExportError, match="kmeans4"):
        save_compact(pruned, LAYERS, tmp_path / "x.safetensors", quantize="int4")
    with pytest.raises(ExportError, match="version"):
        save_compact(pruned, LAYERS, tmp_path / "x.safetensors", version=3)


@pytest.mark.parametrize("kind", ["plain without checksum", "compact with checksum"])
@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_nonfinite_weight_in_a_model_file_is_refused_naming_the_tensor(pruned, tmp_path,
                                                                         kind, bad):
    from aswl.export.compact import load_weights
    from aswl.finite import NonFiniteError

    with torch.no_grad():
        pruned.fc.weight[1, 3] = bad
    path = tmp_path / "m.safetensors"
    if kind.startswith("plain"):
        save_file({k: v.contiguous() for k, v in pruned.state_dict().items()}, str(path))
    else:
        save_compact(pruned, ["conv", "fc"], path)
    with pytest.raises(NonFiniteError, match=r"'.*m.safetensors' has non-finite weights .* "
                       r"in fc\.weight;"):
        load_weights(fresh(), path)


def test_load_compact_with_swapped_arguments_names_the_argument(pruned, tmp_path):
    save_compact(pruned, ["conv", "fc"], tmp_path / "m.safetensors")
    with pytest.raises(TypeError, match=r"model \(the first argument\) must be a "
                       r"torch.nn.Module, got PosixPath; the arguments are swapped"):
        load_compact(tmp_path / "m.safetensors", fresh())
