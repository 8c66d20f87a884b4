"""End to end: the CLI on a tiny slice of the embedded MNIST, resume, faults, bad input."""

import json

import pytest
import torch
from safetensors.torch import load_file

from aswl.cli import main
from aswl.train import CheckpointError, load_checkpoint, load_config
from aswl.train.loop import Trainer

TINY = ["progress=false", "data.limit_train=192", "data.limit_test=96", "batch_size=32",
        "epochs=3", "method.target_sparsity=0.9"]


def run(out, *extra, resume=False):
    args = ["train", "--out", str(out), "--set", *TINY, *extra]
    return main(args + (["--resume"] if resume else []))


def test_cli_train_writes_everything(tmp_path, capsys):
    assert run(tmp_path / "r") == 0
    out = tmp_path / "r"
    for name in ("config.yaml", "report.json", "model.safetensors", "model.sparse.safetensors",
                 "metrics.jsonl", "training.png", "checkpoints/last.pt", "train.log"):
        assert (out / name).is_file(), name
    report = json.loads((out / "report.json").read_text())
    for key in ("method", "model", "dataset", "test_accuracy", "global_sparsity",
                "dense_bytes", "sparse_bytes", "layers"):
        assert key in report
    assert report["global_sparsity"] == pytest.approx(0.9, abs=3 / 266200 + 1e-9)
    # aswl freezes its masks at the end of the ramp: finalize changes nothing
    assert report["mask_changes_at_finalize"] == 0
    assert report["test_accuracy_before_finalize"] == pytest.approx(report["test_accuracy"])
    assert report["sparse_bytes"] < report["dense_bytes"] / 4
    assert {"name", "numel", "nonzero", "sparsity", "attention"} <= set(report["layers"][0])
    # zeros in place in the exported file
    tensors = load_file(str(out / "model.safetensors"))
    zeros = sum(int((tensors[f"{r['name']}.weight"] == 0).sum()) for r in report["layers"])
    assert zeros == report["prunable_weights"] - report["nonzero_weights"]
    assert len((out / "metrics.jsonl").read_text().splitlines()) == 3
    # eval of the exported files gives the reported accuracy
    capsys.readouterr()
    assert main(["eval", str(out)]) == 0
    assert json.loads(capsys.readouterr().out)["test_accuracy"] == pytest.approx(
        report["test_accuracy"])
    assert main(["eval", str(out), "--compact"]) == 0
    assert json.loads(capsys.readouterr().out)["test_accuracy"] == pytest.approx(
        report["test_accuracy"])
    assert main(["report", str(out)]) == 0
    assert "fc1" in capsys.readouterr().out


def test_resume_after_interruption_is_exact(tmp_path, monkeypatch):
    assert run(tmp_path / "full") == 0
    original = Trainer.train_epoch
    calls = {"n": 0}

    def interrupted(self):
        calls["n"] += 1
        if self.epoch == 2:
            raise KeyboardInterrupt
        return original(self)

    monkeypatch.setattr(Trainer, "train_epoch", interrupted)
    assert run(tmp_path / "cut") == 130
    assert not (tmp_path / "cut" / "report.json").exists()
    monkeypatch.setattr(Trainer, "train_epoch", original)
    assert run(tmp_path / "cut", resume=True) == 0
    full = load_file(str(tmp_path / "full" / "model.safetensors"))
    cut = load_file(str(tmp_path / "cut" / "model.safetensors"))
    assert full.keys() == cut.keys()
    for key in full:
        assert torch.equal(full[key], cut[key]), key


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, monkeypatch, caplog):
    import torch.nn.functional as F

    real = F.cross_entropy

    def poisoned(logits, labels):
        loss = real(logits, labels)
        return loss * float("nan") if poisoned.epoch >= 1 else loss

    poisoned.epoch = 0
    original = Trainer.train_epoch

    def tracking(self):
        poisoned.epoch = self.epoch
        return original(self)

    monkeypatch.setattr(F, "cross_entropy", poisoned)
    monkeypatch.setattr(Trainer, "train_epoch", tracking)
    assert run(tmp_path / "nan") == 2
    state = load_checkpoint(tmp_path / "nan" / "checkpoints" / "last.pt")
    assert state["epoch"] == 1


def test_bad_config_stops_before_training(tmp_path, capsys):
    for bad, field in [("method.alpha=0", "alpha"), ("method.band=-1", "band"),
                       ("method.target_sparsity=1.0", "target_sparsity"),
                       ("model=nonet", "model"), ("dataset=nodata", "dataset"),
                       ("epochs=zero", "epochs"), ("bogus=1", "bogus")]:
        assert main(["train", "--out", str(tmp_path / "x"), "--set", bad]) == 2
        err = capsys.readouterr().err
        assert field in err and "error:" in err
    assert not (tmp_path / "x" / "metrics.jsonl").exists()


def test_set_reaches_nested_keys_and_yaml(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("model: lenet5\nmethod:\n  name: aswl\n  alpha: 2\ndata:\n  root: /x\n")
    config = load_config(path, ["method.band=0.1", "data.limit_train=10", "lr=0.1"])
    assert config.model == "lenet5" and config.data.root == "/x"
    assert config.method == {"name": "aswl", "alpha": 2, "band": 0.1}
    assert config.data.limit_train == 10 and config.lr == 0.1
    assert load_config(None, ["method=dense"]).method == {"name": "dense"}


def test_corrupt_checkpoint_gives_clear_error(tmp_path):
    path = tmp_path / "last.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="cannot be read"):
        load_checkpoint(path)
    torch.save({"some": "thing"}, path)
    with pytest.raises(CheckpointError, match="not an aswl checkpoint"):
        load_checkpoint(path)


def test_bf16_autocast_path_on_cpu(tmp_path):
    assert run(tmp_path / "amp", "amp=bf16", "epochs=1") == 0
    report = json.loads((tmp_path / "amp" / "report.json").read_text())
    assert report["global_sparsity"] == pytest.approx(0.9, abs=1e-4)


def test_gradient_clipping_option_runs(tmp_path):
    assert run(tmp_path / "clip", "grad_clip=0.5", "epochs=1") == 0
    assert main(["train", "--out", str(tmp_path / "bad"), "--set", "grad_clip=-1"]) == 2


def test_second_run_in_same_folder_refused_unless_overwrite(tmp_path):
    assert run(tmp_path / "r", "epochs=1") == 0
    first = (tmp_path / "r" / "report.json").read_text()
    assert run(tmp_path / "r", "epochs=1") == 2
    assert (tmp_path / "r" / "report.json").read_text() == first  # nothing lost
    assert main(["train", "--out", str(tmp_path / "r"), "--overwrite", "--set", *TINY,
                 "epochs=1", "seed=1"]) == 0
    assert len((tmp_path / "r" / "metrics.jsonl").read_text().splitlines()) == 1


def test_fp16_scaler_path_on_cpu(tmp_path):
    assert run(tmp_path / "fp16", "amp=fp16", "epochs=1", "method=aswl_paper") == 0
    report = json.loads((tmp_path / "fp16" / "report.json").read_text())
    assert all(0.01 - 1e-6 <= row["attention"] <= 1.0 for row in report["layers"])


def test_best_val_selection_waits_for_the_method_schedule(tmp_path, monkeypatch):
    """magnitude prunes at 90% of training, after ramp_end (75%): a best.pt saved before the
    pruning would be a dense model that finish() prunes once with no fine-tuning."""
    import aswl.train.loop as loop

    saved = []
    original = loop.save_checkpoint

    def spy(state, path):
        if path.name == "best.pt":
            saved.append(state["epoch"])
        return original(state, path)

    monkeypatch.setattr(loop, "save_checkpoint", spy)
    assert run(tmp_path / "r", "epochs=4", "method=magnitude", "method.prune_at=0.9",
               "data.val_fraction=0.25", "select=best_val") == 0
    assert saved and min(saved) == 4  # epoch 3 ends at 75% of training, before the pruning
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["global_sparsity"] == pytest.approx(0.9, abs=1e-3)
