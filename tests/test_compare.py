"""`aswl compare`: the grid, its outputs, resuming after an interruption, failed runs."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import aswl.export.plot
import aswl.train
from aswl.cli import main
from aswl.compare import Grid, load_grid, plan_runs, read_results, summarize
from aswl.methods import ConfigError, list_methods
from aswl.train import load_config

TINY = ["dataset=synthetic", "model=lenet300", "epochs=1", "batch_size=64", "progress=false",
        "data.limit_train=128", "data.limit_test=64", "device=cpu"]
# Methods whose final sparsity is not the target (it follows their own hyper-parameters).
UNTARGETED = {"aswl_paper"}


@pytest.fixture(autouse=True)
def _fast_tiny_runs(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Each run's own training.png is not under test here and costs most of a tiny run."""
    monkeypatch.setattr(aswl.export.plot, "plot_run", lambda *args, **kwargs: None)
    yield


def _compare(out: Path, methods: str, sparsities: str, seeds: str, *extra: str) -> int:
    return main(["compare", "--set", *TINY, "--methods", methods, "--sparsities", sparsities,
                 "--seeds", seeds, "--out", str(out), *extra])


def _csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_compare_grid_outputs_and_resume(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    assert _compare(out, "aswl,dense", "0.5,0.8", "2") == 0
    for name in ("results.csv", "summary.csv", "summary.md", "accuracy_vs_sparsity.png",
                 "layer_sparsity.png", "compare.log"):
        assert (out / name).is_file(), name
    rows = read_results(out / "results.csv")
    assert len(rows) == 6  # aswl x 2 targets x 2 seeds + dense x 2 seeds
    assert {r["run"] for r in rows} == {"aswl-0.5-seed0", "aswl-0.5-seed1", "aswl-0.8-seed0",
                                        "aswl-0.8-seed1", "dense-seed0", "dense-seed1"}
    assert all(r["status"] == "ok" for r in rows)
    summary = _csv(out / "summary.csv")
    assert [(r["method"], r["target_sparsity"], r["seeds"]) for r in summary] == [
        ("dense", "", "2"), ("aswl", "0.5", "2"), ("aswl", "0.8", "2")]
    for row in summary:
        target = float(row["target_sparsity"] or 0.0)
        assert float(row["sparsity_mean"]) == pytest.approx(target, abs=2e-3)
        assert 0.0 <= float(row["accuracy_mean"]) <= 100.0
        assert float(row["accuracy_std"]) >= 0.0
    text = (out / "summary.md").read_text()
    assert "| aswl | 80 |" in text and "| dense | - |" in text

    # Interrupted grid: one run lost its report (its checkpoint is there) -> only it reruns.
    reports = {r["run"]: out / "runs" / r["run"] / "report.json" for r in rows}
    before = {name: path.stat().st_mtime_ns for name, path in reports.items()}
    reports["aswl-0.8-seed1"].unlink()
    assert _compare(out, "aswl,dense", "0.5,0.8", "2") == 0
    after = {name: path.stat().st_mtime_ns for name, path in reports.items()}
    changed = {name for name in reports if after[name] != before[name]}
    assert changed == {"aswl-0.8-seed1"}
    assert "compare: 1 resumed, 5 cached" in (out / "compare.log").read_text()
    rerun = read_results(out / "results.csv")
    assert len(rerun) == 6
    assert [(r["run"], r["test_accuracy"]) for r in rerun] == [
        (r["run"], r["test_accuracy"]) for r in rows]


def test_failed_run_is_recorded_and_others_go_on(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def fake_train(config: Any, out_dir: Path, resume: bool = False) -> dict[str, Any]:
        calls.append(config.method["name"])
        if config.method["name"] == "dense":
            raise RuntimeError("boom")
        target = config.method["target_sparsity"]
        Path(out_dir).mkdir(parents=True, exist_ok=True)
        return {"test_accuracy": 0.5, "global_sparsity": target, "train_seconds": 0.0,
                "epochs": 1, "layers": [{"name": "fc1", "sparsity": target}]}

    monkeypatch.setattr(aswl.train, "train", fake_train)
    out = tmp_path / "cmp"
    assert _compare(out, "dense,aswl", "0.5,0.9", "1") == 1  # a failed run: exit status 1
    assert calls == ["dense", "aswl", "aswl"]
    rows = {r["run"]: r for r in read_results(out / "results.csv")}
    assert rows["dense-seed0"]["status"] == "failed"
    assert "RuntimeError: boom" in rows["dense-seed0"]["error"]
    assert rows["aswl-0.9-seed0"]["status"] == "ok"
    summary = _csv(out / "summary.csv")
    assert summary[0]["method"] == "dense" and summary[0]["seeds"] == "0"
    assert summary[0]["failed"] == "1"
    assert "dense-seed0" in (out / "summary.md").read_text()


def test_grid_file_flags_and_errors(tmp_path: Path) -> None:
    path = tmp_path / "grid.yaml"
    path.write_text("methods: [dense, aswl]\nsparsities: [0.95, 0.9, 0.98]\nseeds: [3, 5]\n")
    grid = load_grid(path)
    assert grid.methods == ["dense", "aswl"] and grid.sparsities == [0.9, 0.95, 0.98]
    assert grid.seeds == [3, 5] and grid.plot_sparsity() == 0.95
    grid = load_grid(path, seeds="2", methods="aswl", layer_plot_sparsity=0.9)
    assert grid.seeds == [0, 1] and grid.methods == ["aswl"] and grid.plot_sparsity() == 0.9
    with pytest.raises(ConfigError, match="unknown method"):
        load_grid(methods="aswl,nope", sparsities="0.9")
    with pytest.raises(ConfigError, match="sparsity"):
        load_grid(methods="aswl", sparsities="0.9,1.5")
    with pytest.raises(ConfigError, match="no target sparsities"):
        load_grid(methods="aswl")
    with pytest.raises(ConfigError, match="layer plot"):
        load_grid(methods="aswl", sparsities="0.9", layer_plot_sparsity=0.5)
    path.write_text("method: [aswl]\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_grid(path)


def test_plan_shares_the_base_config() -> None:
    base = load_config(None, [*TINY, "epochs=3", "lr=0.02", "method.mask_interval=4",
                              "method.alpha=2"])
    runs = plan_runs(base, Grid(methods=["dense", "aswl"], sparsities=[0.5, 0.9], seeds=[0, 1]))
    assert [r.name for r in runs] == ["dense-seed0", "aswl-0.5-seed0", "aswl-0.9-seed0",
                                      "dense-seed1", "aswl-0.5-seed1", "aswl-0.9-seed1"]
    for run in runs:
        assert (run.config.epochs, run.config.lr, run.config.seed) == (3, 0.02, run.seed)
        if run.method != "dense":  # a gradual option: every method that uses it
            assert run.config.method["mask_interval"] == 4
        assert run.config.method["name"] == run.method
    dense = runs[0].config.method
    assert "alpha" not in dense and "target_sparsity" not in dense  # not a dense option
    assert "mask_interval" not in dense  # dense has no schedule
    assert runs[2].config.method == {"name": "aswl", "mask_interval": 4, "alpha": 2,
                                     "target_sparsity": 0.9}
    with pytest.raises(ConfigError, match="aswl-1"):  # a bad run is named before any trains
        plan_runs(base, Grid(methods=["aswl"], sparsities=[1.0], seeds=[0]))


def test_summary_statistics() -> None:
    rows = [{"run": f"m-0.9-seed{k}", "method": "m", "target_sparsity": 0.9, "seed": k,
             "status": "ok", "test_accuracy": acc, "global_sparsity": 0.9}
            for k, acc in enumerate((0.90, 0.92, 0.94))]
    (row,) = summarize(rows)
    assert row["accuracy_mean"] == pytest.approx(92.0)
    assert row["accuracy_std"] == pytest.approx(2.0)
    assert row["seeds"] == 3 and row["failed"] == 0


OTHERS = sorted(set(list_methods()) - {"dense", "aswl"} - UNTARGETED)


@pytest.mark.skipif(not OTHERS, reason="no other sparse method registered yet")
@pytest.mark.slow  # trains every method
def test_other_methods_reach_their_target(tmp_path: Path) -> None:
    out = tmp_path / "cmp"
    _compare(out, ",".join(OTHERS), "0.8", "1")
    rows = {r["method"]: r for r in read_results(out / "results.csv")}
    for name in OTHERS:
        assert rows[name]["status"] == "ok", (name, rows[name]["error"])
        assert rows[name]["global_sparsity"] == pytest.approx(0.8, abs=2e-3), name


def test_report_only_trains_nothing(tmp_path: Path) -> None:
    out = tmp_path / "grid"
    assert _compare(out, "dense", "0.5", "1") == 0
    code = main(["compare", "--set", *TINY, "--methods", "dense,aswl", "--sparsities", "0.5",
                 "--seeds", "1", "--out", str(out), "--report-only"])
    assert code == 1  # the aswl run is missing
    assert not (out / "runs" / "aswl-0.5-seed0").exists()
    text = (out / "summary.md").read_text()
    assert "not trained yet (1): aswl-0.5-seed0" in text


def test_variants_are_methods_with_options_of_their_own(tmp_path: Path) -> None:
    base = load_config(None, [*TINY, "method.mask_interval=4"])
    grid = load_grid(methods="aswl", variants="aswl:prior=uniform+attention_lr=0",
                     sparsities="0.9", seeds="1")
    runs = plan_runs(base, grid)
    assert [r.name for r in runs] == ["aswl-0.9-seed0",
                                      "aswl_prior=uniform+attention_lr=0-0.9-seed0"]
    assert runs[1].method == "aswl:prior=uniform+attention_lr=0"  # its rows' label
    assert runs[1].config.method == {"name": "aswl", "mask_interval": 4, "prior": "uniform",
                                     "attention_lr": 0, "target_sparsity": 0.9}
    path = tmp_path / "grid.yaml"
    path.write_text("methods: [dense]\nvariants: ['aswl:prior=uniform']\nsparsities: [0.5]\n")
    assert load_grid(path).variants == ["aswl:prior=uniform"]
    assert load_grid(variants="aswl:exclude=[0, 2]", sparsities="0.9").entries() == [
        ("aswl:exclude=[0, 2]", "aswl", {"exclude": [0, 2]})]  # one token, commas and all
    for bad, match in (("aswl:prior", "NAME:KEY=VALUE"), ("aswl:", "NAME:KEY=VALUE"),
                       ("nope:x=1", "unknown method")):
        with pytest.raises(ConfigError, match=match):
            load_grid(variants=bad, sparsities="0.9")
    with pytest.raises(ConfigError, match="listed twice"):
        load_grid(methods="aswl", variants=["aswl"], sparsities="0.9")
    with pytest.raises(ConfigError, match="prior"):
        plan_runs(base, load_grid(variants="aswl:prior=nope", sparsities="0.9", seeds="1"))


def test_variants_from_the_command_line(tmp_path: Path, capsys) -> None:
    out = tmp_path / "cmp"
    assert _compare(out, "dense", "0.5", "1", "--variants", "aswl:prior=uniform",
                    "aswl:attention_lr=0", "--report-only") == 1  # nothing trained yet
    text = (out / "summary.md").read_text()
    assert "aswl_prior=uniform-0.5-seed0" in text and "aswl_attention_lr=0-0.5-seed0" in text
