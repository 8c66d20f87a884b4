"""benchmarks/device_check.py runs its quick mode on the CPU, so the GPU check cannot rot."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "device_check.py"


@pytest.fixture(scope="module")
def device_check():
    spec = importlib.util.spec_from_file_location("device_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["device_check"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("device_check", None)


def rows_of(table: str) -> dict[str, list[str]]:
    rows = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split(" | ")]
        if len(cells) == 5 and cells[1] in ("pass", "FAIL", "info"):
            rows[cells[0]] = cells[1:]
    return rows


@pytest.mark.slow
def test_quick_run_passes_every_check_on_cpu(device_check, tmp_path, capsys):
    table = tmp_path / "table.md"
    code = device_check.main(["--device", "cpu", "--out", str(tmp_path / "runs"),
                              "--table", str(table)])
    printed = capsys.readouterr().out
    rows = rows_of(table.read_text())
    assert code == 0, printed
    default = device_check.overhead.mask_intervals("aswl", ["default"])[0]
    cadences = [f"default: masks every {default}",
                *(f"masks every {k}" for k in sorted({1, 16} - {default}))]
    assert set(rows) == {
        "train lenet300 aswl", "train lenet300 aswl_paper", "train resnet20 aswl",
        "train resnet20 aswl_paper", "export compact + CSR", "bf16 resnet20 aswl",
        "fp16 lenet300 aswl_paper", "resume resnet20 aswl",
        *(f"overhead {model} ({cadence})" for model in ("resnet20", "lenet5")
          for cadence in cadences),
        "memory resnet20 aswl/plain", "memory lenet5 aswl/plain", "latency budget resnet20"}
    assert all(status == "pass" for name, (status, *_) in rows.items()
               if name.split()[0] in ("train", "export", "bf16", "fp16", "resume"))
    assert "sparsity 95.000%" in rows["train lenet300 aswl"][1]
    assert "first layer output in bf16" in rows["bf16 resnet20 aswl"][1]
    skipped = int(rows["fp16 lenet300 aswl_paper"][1].split(" of ")[0])
    assert skipped >= 1
    assert rows["resume resnet20 aswl"][1].startswith("bit-exact")
    assert "l1_filter 2x: table" in rows["latency budget resnet20"][1]
    # timing goals are not judged in the quick run, but the figures are there
    assert "x plain" in rows[f"overhead resnet20 ({cadences[0]})"][1]
    assert "device cpu" in printed and "mode quick" in printed


@pytest.mark.slow  # trains with the device check's fp16 recipe
def test_fp16_check_sees_the_skips_and_fails_when_the_method_steps_on_them(
        device_check, tmp_path, monkeypatch):
    sizes = device_check.Sizes(**{**vars(device_check.QUICK), "main_epochs": 1,
                                  "main_limit_train": 1280})  # 20 steps
    checks = device_check.Checks(torch.device("cpu"), sizes, tmp_path, 0)
    ok, figure = checks.fp16_check()
    assert ok, figure
    assert int(figure.split(" of ")[0]) >= 1
    # a step order that lets the method step although the scaler skipped the step
    import aswl.train.loop as loop

    original = loop.training_step

    def ignores_overflow(model, method, optimizer, *args, scaler=None, **options):
        before = scaler.get_scale()
        loss = original(model, method, optimizer, *args, scaler=scaler, **options)
        if scaler.get_scale() < before:
            method.step(optimizer)
        return loss

    monkeypatch.setattr(loop, "training_step", ignores_overflow)
    checks.run("fp16 broken", "", checks.fp16_check)
    assert checks.rows[-1].status == device_check.FAIL


def test_bad_arguments_give_one_line_errors(device_check, capsys):
    assert device_check.main(["--only", "train,warp"]) == 2
    assert "unknown group(s) ['warp']" in capsys.readouterr().err
    if not torch.cuda.is_available():
        assert device_check.main(["--device", "cuda"]) == 2
        assert "sees no CUDA device; use --device cpu" in capsys.readouterr().err
