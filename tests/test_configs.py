"""Shipped configs (src/aswl/configs): every experiment file loads, and each one trains from the
CLI on tiny files written in its dataset's real format (IDX, CIFAR pickle batches, ImageNet JPEG
class folders)."""

from __future__ import annotations

import json
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

from aswl.cli import main
from aswl.train import load_config

sys.path.insert(0, str(Path(__file__).parent / "data"))
from data_writers import IDX_NAMES, cifar_batch, write_idx  # noqa: E402

CONFIGS = sorted((Path(__file__).parents[1] / "src" / "aswl" / "configs").glob("*.yaml"))
EXPECTED = {"mnist_lenet300", "mnist_lenet5", "fashion_lenet300", "fashion_lenet5",
            "cifar10_vgg16", "cifar10_resnet56", "cifar10_resnet20", "imagenet_resnet50"}


def write_idx_files(root: Path, n: int = 8) -> None:
    rng = np.random.default_rng(0)
    for split in ("train", "test"):
        images = rng.integers(0, 256, size=(n, 28, 28), dtype=np.uint8)
        labels = (np.arange(n) % 10).astype(np.uint8)
        write_idx(root / IDX_NAMES[f"{split}_images"], images, gz=split == "test")
        write_idx(root / IDX_NAMES[f"{split}_labels"], labels)


def write_cifar_batches(root: Path, n: int = 4) -> None:
    folder = root / "cifar-10-batches-py"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        (folder / f"data_batch_{i}").write_bytes(pickle.dumps(cifar_batch(n, (i - 1) * n, i)))
    (folder / "test_batch").write_bytes(pickle.dumps(cifar_batch(2 * n, 200, 9)))


def write_image_folders(root: Path, n: int = 4) -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for c, wnid in enumerate(("n01440764", "n01443537")):
            folder = root / split / wnid
            folder.mkdir(parents=True)
            for i in range(n):
                pixels = rng.integers(0, 256, size=(40, 48, 3), dtype=np.uint8)
                pixels[..., c] = 255
                Image.fromarray(pixels).save(folder / f"{wnid}_{i}.JPEG")


WRITERS = {"mnist": write_idx_files, "fashion-mnist": write_idx_files,
           "cifar10": write_cifar_batches, "imagenet": write_image_folders}



def test_every_paper_experiment_has_a_config() -> None:
    assert EXPECTED <= {path.stem for path in CONFIGS}


@pytest.mark.parametrize("path", CONFIGS, ids=lambda p: p.stem)
def test_config_loads_and_documents_itself(path: Path) -> None:
    config = load_config(path)
    assert config.method_name() == "aswl"
    assert 0 < config.method_config().target_sparsity < 1
    header = path.read_text()
    assert "Reference point" in header and f"aswl train --config {path.stem} " in header
    assert config.dataset in WRITERS


# seconds each: the full suite (-m "") runs them
SLOW_CONFIGS = {"cifar10_vgg16", "imagenet_resnet50", "cifar10_resnet56", "cifar10_resnet20",
                "mnist_lenet5", "fashion_resnet20"}


@pytest.mark.parametrize("path", [pytest.param(p, marks=pytest.mark.slow)
                                  if p.stem in SLOW_CONFIGS else p for p in CONFIGS],
                         ids=lambda p: p.stem)
def test_config_trains_from_the_cli(path: Path, tmp_path: Path, capsys) -> None:
    config = load_config(path)
    root, out = tmp_path / "data", tmp_path / "run"
    root.mkdir()
    WRITERS[config.dataset](root)
    overrides = [f"data.root={root}", "epochs=1", "progress=false", "data.limit_train=8",
                 "data.limit_test=8", "batch_size=4", "data.workers=0"]
    if config.dataset == "imagenet":
        overrides += ["data.image_size=32"]
    code = main(["train", "--config", str(path), "--out", str(out), "--set", *overrides])
    assert code == 0, capsys.readouterr().err
    report = json.loads((out / "report.json").read_text())
    assert (report["model"], report["dataset"]) == (config.model, config.dataset)
    assert report["epochs"] == 1 and report["world_size"] == 1
    assert report["target_sparsity"] == pytest.approx(config.method_config().target_sparsity)
    assert (out / "model.safetensors").is_file() and (out / "checkpoints" / "last.pt").is_file()


def test_one_config_diff_for_resume_and_compare() -> None:
    from aswl.config import NEUTRAL_KEYS, RESUMABLE_KEYS, config_diff

    old = load_config(overrides=["epochs=3", "device=cpu"]).to_dict()
    new = load_config(overrides=["epochs=5", "device=auto", "lr=0.01", "progress=false",
                                 "data.limit_train=10", "method.target_sparsity=0.8"]).to_dict()
    assert config_diff(old, new) == ["data.limit_train", "method.target_sparsity"]
    assert config_diff(old, new, NEUTRAL_KEYS) == ["data.limit_train", "epochs", "lr",
                                                   "method.target_sparsity"]
    assert NEUTRAL_KEYS <= RESUMABLE_KEYS
    assert config_diff(old, old) == []


def test_shipped_configs_are_found_by_name_from_anywhere(tmp_path: Path, monkeypatch,
                                                         capsys) -> None:
    from aswl.configs import list_configs, resolve_config

    monkeypatch.chdir(tmp_path)  # no configs/ folder here
    assert {item.name for item in list_configs()} == {path.stem for path in CONFIGS}
    assert resolve_config("fashion_lenet300").read_text() == \
        (CONFIGS[0].parent / "fashion_lenet300.yaml").read_text()
    assert resolve_config("configs/mnist_lenet5.yaml").name == "mnist_lenet5.yaml"
    own = tmp_path / "mine.yaml"
    own.write_text("epochs: 1\n")
    assert resolve_config("mine.yaml") == Path("mine.yaml")
    assert main(["train", "--config", "no_such_config", "--out", str(tmp_path / "r")]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]  # one clear line
    assert last.startswith("error: config 'no_such_config'") and "fashion_lenet300" in last


def test_aswl_configs_lists_names_and_reference_points(capsys) -> None:
    assert main(["configs"]) == 0
    out = capsys.readouterr().out
    for path in CONFIGS:
        assert f"{path.stem}\n" in out
    assert "Han et al. 2015" in out and "93.73%" in out  # reference points are shown
    assert "Reference point" not in out and "reference: " in out


def test_version_flag(capsys) -> None:
    import aswl

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"aswl {aswl.__version__}"


def test_aswl_config_prints_the_resolved_config_with_a_doc_per_key(tmp_path, capsys) -> None:
    import dataclasses

    import yaml

    from aswl.config import Config

    args = ["config", "--config", "fashion_lenet300", "--set", "epochs=3", "method.alpha=2"]
    assert main(args) == 0
    text = capsys.readouterr().out
    resolved = load_config(CONFIGS[0].parent / "fashion_lenet300.yaml",
                           ["epochs=3", "method.alpha=2"])
    printed = yaml.safe_load(text)  # valid YAML: comments after the values
    assert printed["epochs"] == 3 and printed["method"]["alpha"] == 2.0
    assert printed["model"] == resolved.model and printed["data"]["root"] is None
    # every key of the run config and of the method has a one-line comment
    lines = text.splitlines()
    for item in dataclasses.fields(Config):
        line = next(line for line in lines if line.startswith(f"{item.name}:"))
        assert " # " in line and len(line.split(" # ", 1)[1]) > 5, line
    assert all(" # " in line for line in lines if line.startswith("  "))
    # the printed file reproduces the same run config
    path = tmp_path / "printed.yaml"
    path.write_text(text)
    assert load_config(path).to_dict() == {**resolved.to_dict(),
                                           "method": printed["method"]}
