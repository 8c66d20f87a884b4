"""Run folders (aswl.runs): how a run starts in a folder, the resume check, reuse, rebuild."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from aswl.checks import ConfigError
from aswl.config import load_config
from aswl.runs import (
    CHECKPOINT,
    RUN_FILES,
    RunDirError,
    changed_settings,
    check_resume,
    default_out,
    load_run,
    prepare_run,
)

TINY = ["dataset=synthetic", "model=lenet300", "data.limit_test=20"]


def earlier_run(out: Path, checkpoint: bool = False) -> None:
    """The files an earlier attempt left (with or without its checkpoint)."""
    (out / "checkpoints").mkdir(parents=True, exist_ok=True)
    for name in RUN_FILES:
        if checkpoint or name != str(CHECKPOINT):
            (out / name).write_text("old")


def test_a_resume_with_a_checkpoint_keeps_everything(tmp_path):
    earlier_run(tmp_path, checkpoint=True)
    assert prepare_run(tmp_path, resume=True) is True
    assert (tmp_path / "metrics.jsonl").read_text() == "old"


def test_a_resume_without_checkpoint_starts_clean(tmp_path, caplog):
    earlier_run(tmp_path)
    assert prepare_run(tmp_path, resume=True) is False
    assert not any((tmp_path / name).exists() for name in RUN_FILES)
    assert "no checkpoint" in caplog.text


def test_an_earlier_run_is_refused_unless_overwritten(tmp_path):
    earlier_run(tmp_path, checkpoint=True)
    with pytest.raises(RunDirError, match="already holds a run.*--overwrite"):
        prepare_run(tmp_path, resume=False)
    assert prepare_run(tmp_path, resume=False, overwrite=True, main=False) is False
    assert (tmp_path / "metrics.jsonl").exists()  # other ranks remove nothing
    assert prepare_run(tmp_path, resume=False, overwrite=True) is False
    assert not any((tmp_path / name).exists() for name in RUN_FILES)


def test_resume_may_change_only_the_resumable_settings(tmp_path):
    saved = load_config(None, TINY).to_dict()
    check_resume(saved, load_config(None, [*TINY, "lr=0.01", "epochs=30"]), tmp_path)
    with pytest.raises(RunDirError, match="cannot change seed"):
        check_resume(saved, load_config(None, [*TINY, "seed=4"]), tmp_path)


def test_changed_settings_ignore_the_neutral_ones(tmp_path):
    config = load_config(None, TINY)
    assert changed_settings(tmp_path, config) == []  # nothing saved: nothing to compare
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config.to_dict()))
    assert changed_settings(tmp_path, load_config(None, [*TINY, "progress=false"])) == []
    assert changed_settings(tmp_path, load_config(None, [*TINY, "lr=0.01"])) == ["lr"]
    (tmp_path / "config.yaml").write_text("a: [")
    assert changed_settings(tmp_path, config) == ["config.yaml (unreadable)"]


def test_load_run_rebuilds_model_and_data_and_limits_overrides(tmp_path):
    config = load_config(None, TINY)
    assert default_out(config) == Path("runs/aswl-lenet300-synthetic-s0")
    with pytest.raises(RunDirError, match="no config.yaml"):
        load_run(tmp_path)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config.to_dict()))
    loaded, data, model = load_run(tmp_path, ["data.limit_test=10"])
    assert loaded.model == "lenet300" and len(data.test) == 10
    assert sum(p.numel() for p in model.parameters()) == 266_610
    with pytest.raises(ConfigError, match="only dataset, data"):
        load_run(tmp_path, ["model=lenet5"])


# ------------------------------------------------------------ a run is never replaced
TRAIN = ["progress=false", "data.limit_train=64", "data.limit_test=32", "batch_size=32",
         "method.target_sparsity=0.5"]


def train_cli(out: Path, *extra: str, flags: tuple[str, ...] = ()) -> list[str]:
    return ["train", "--out", str(out), *flags, "--set", *TRAIN, *extra]


def test_a_finished_run_without_metric_logs_is_not_replaced(tmp_path, cli_error):
    from aswl.cli import main

    out = tmp_path / "r"
    assert main(train_cli(out, "epochs=1", "log=[]")) == 0
    assert not (out / "metrics.jsonl").exists()
    model = (out / "model.safetensors").read_bytes()
    line = cli_error(train_cli(out, "epochs=1", "log=[]", "seed=3"))
    assert "already holds a run" in line and "--overwrite" in line
    assert (out / "model.safetensors").read_bytes() == model


def test_a_folder_holding_only_the_config_of_other_settings_is_a_run(tmp_path):
    config = load_config(None, TINY)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config.to_dict()))
    assert prepare_run(tmp_path, resume=False, config=config) is False  # same: started again
    with pytest.raises(RunDirError, match=r"already holds a run \(config.yaml .*: seed\)"):
        prepare_run(tmp_path, resume=False, config=load_config(None, [*TINY, "seed=2"]))


def test_a_resume_never_asks_for_fewer_epochs_than_trained(tmp_path, cli_error):
    from aswl.cli import main

    out = tmp_path / "r"
    assert main(train_cli(out, "epochs=2")) == 0
    saved = (out / "config.yaml").read_text()
    line = cli_error(train_cli(out, "epochs=1", flags=("--resume",)))
    assert "epochs = 1" in line and "trained 2 epochs" in line and "epochs >= 2" in line
    assert (out / "config.yaml").read_text() == saved
    with pytest.raises(RunDirError, match="trained 2 epochs"):
        check_resume(yaml.safe_load(saved), load_config(None, ["epochs=1"]), out, trained=2)


def test_an_empty_out_is_refused(tmp_path, cli_error, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert "--out is empty" in cli_error(["train", "--out", "", "--set", *TRAIN])
    assert "--out is empty" in cli_error(["compare", "--methods", "dense", "--out", " "])
    assert list(tmp_path.iterdir()) == []


def test_a_lock_file_that_is_a_folder_is_named(tmp_path, cli_error):
    (tmp_path / "r" / ".aswl.lock").mkdir(parents=True)
    line = cli_error(train_cli(tmp_path / "r"))
    assert ".aswl.lock" in line and "lock file" in line and "remove it" in line


def test_a_start_interrupted_while_loading_data_resumes_with_the_printed_command(
        tmp_path, monkeypatch, capsys):
    import aswl.train.loop as loop
    from aswl.cli import main

    out = tmp_path / "r"

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(loop, "build_datasets", interrupted)
        assert main(train_cli(out, "epochs=1")) == 130
    assert f"Continue with: aswl train --out {out} --resume" in capsys.readouterr().err
    assert (out / "config.yaml").is_file()
    assert main(["train", "--out", str(out), "--resume"]) == 0
    assert (out / "model.safetensors").is_file()


def test_an_interrupt_before_the_config_is_written_says_to_start_again(tmp_path, caplog):
    from aswl.cli import Terminated, _stopped

    assert _stopped(tmp_path, Terminated()) == 143
    err = caplog.text
    assert "config.yaml was not written yet" in err and "Start it again" in err
    assert "--resume" not in err
