"""Trainer callbacks, prebuilt data and a random subset per epoch: what benchmarks build on."""

from __future__ import annotations

import pytest
import torch

import aswl.export.plot
from aswl.config import load_config
from aswl.data import build_datasets
from aswl.data.loader import batches, steps_per_epoch
from aswl.train import Callback, Trainer, train

TINY = ["dataset=synthetic", "model=lenet300", "epochs=2", "batch_size=32", "progress=false",
        "data.limit_test=40", "device=cpu", "log=[]"]


@pytest.fixture(autouse=True)
def _no_plot(monkeypatch):
    monkeypatch.setattr(aswl.export.plot, "plot_run", lambda *args, **kwargs: None)


class Recorder(Callback):
    def __init__(self) -> None:
        self.events: list[tuple] = []

    def on_start(self, trainer):
        self.events.append(("start", trainer.epoch))

    def on_step(self, trainer, step, loss):
        assert torch.isfinite(loss)
        self.events.append(("step", step))

    def on_epoch(self, trainer, record):
        self.events.append(("epoch", record["epoch"]))


def test_hooks_run_in_order_with_the_step_count(tmp_path):
    config = load_config(None, [*TINY, "data.epoch_samples=64"])
    recorder = Recorder()
    trainer = Trainer(config, tmp_path, callbacks=[recorder])
    assert trainer.per_epoch == 2 and trainer.total_steps == 4  # 64 of 400 samples per epoch
    trainer.fit()
    assert recorder.events == [("start", 0), ("step", 1), ("step", 2), ("epoch", 1),
                               ("step", 3), ("step", 4), ("epoch", 2)]


def test_prebuilt_data_is_used_as_given(tmp_path):
    data = build_datasets("synthetic", limit_test=16)
    config = load_config(None, [*TINY, "epochs=1", "dataset=mnist-embedded"])
    report = train(config, tmp_path, data=data)  # never reads mnist-embedded
    assert report["test_accuracy"] * 16 == pytest.approx(round(report["test_accuracy"] * 16))


def test_a_fresh_random_subset_each_epoch():
    data = build_datasets("synthetic").train
    first = torch.cat([y for _, y in batches(data, 50, shuffle=True, seed=1, epoch=0, limit=100)])
    again = torch.cat([y for _, y in batches(data, 50, shuffle=True, seed=1, epoch=0, limit=100)])
    other = torch.cat([y for _, y in batches(data, 50, shuffle=True, seed=1, epoch=1, limit=100)])
    assert len(first) == 100 and torch.equal(first, again) and not torch.equal(first, other)
    assert steps_per_epoch(data, 32, limit=100) == 4 and steps_per_epoch(data, 32) == 13


def test_epoch_samples_is_checked():
    from aswl.checks import ConfigError

    with pytest.raises(ConfigError, match="data.epoch_samples"):
        load_config(None, [*TINY, "data.epoch_samples=0"])
