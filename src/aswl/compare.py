"""Comparison harness: train a grid of methods x target sparsities x seeds on one base config.

    aswl compare --set dataset=cifar10 model=resnet20 epochs=160 \\
        --methods dense,aswl,gmp,dpf,snip,rigl --sparsities 0.9,0.95,0.98,0.99 --seeds 3 \\
        --out runs/compare-resnet20

Every run shares the base config (``--config`` + ``--set``): same epochs, optimiser, schedule and,
per seed, the same data order; only ``method`` (name and ``target_sparsity``) and ``seed`` vary.
``dense`` runs once per seed (no target: it is the reference row). Options of the base config's
``method`` section that a method accepts (``mask_interval``, ``ramp_end``, ...) are passed on;
the others are dropped for that method. A *variant* (``--variants 'aswl:prior=uniform'``, or
``variants:`` in the grid file) is a method with options of its own, ``NAME:KEY=VALUE[+...]``
(values read as YAML); it gets rows of its own, labelled by the token.

Each run goes to ``OUT/runs/<method>-<sparsity>-seed<K>/`` (``OUT/runs/dense-seed<K>/``). A run
with a ``report.json`` is not trained again, one with ``checkpoints/last.pt`` but no report is
resumed, so rerunning the same command after an interruption continues where it stopped. A run
that raises is logged and recorded as ``failed``; the others go on. A finished run whose saved
``config.yaml`` differs from what the grid asks for now is recorded as ``stale`` and kept out of
the summary (delete its folder to retrain it, or use another ``--out``).

Outputs in ``OUT``: ``results.csv`` (one row per run), ``summary.csv`` / ``summary.md`` (per
method and target: mean and std of test accuracy over seeds, mean achieved sparsity),
``accuracy_vs_sparsity.png`` and ``layer_sparsity.png``.
"""

from __future__ import annotations

import contextlib
import csv
import dataclasses
import json
import logging
import math
import re
import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aswl.config import Config
from aswl.export.plot import plot_accuracy_vs_sparsity, plot_layer_sparsity
from aswl.grid import (  # noqa: F401  (re-exported: the grid is part of compare's API)
    DENSE,
    GRID_KEYS,
    Grid,
    load_grid,
    parse_list,
    parse_seeds,
    parse_variant,
)
from aswl.io import make_folder, remove_temp_files, write_text, write_with
from aswl.methods import ConfigError, get_method

log = logging.getLogger(__name__)

RESULT_FIELDS = ["run", "method", "target_sparsity", "seed", "status", "test_accuracy",
                 "global_sparsity", "train_seconds", "epochs", "error"]
SUMMARY_FIELDS = ["method", "target_sparsity", "accuracy_mean", "accuracy_std",
                  "sparsity_mean", "seeds", "failed", "stale"]
ACTIONS = ("trained", "resumed", "cached", "failed", "missing")


@dataclass
class RunSpec:
    """One cell of the grid: where it goes and the config it trains with."""

    name: str
    method: str
    target_sparsity: float | None
    seed: int
    config: Config


def sparsity_label(value: float) -> str:
    return f"{value:g}"


def run_name(method: str, target_sparsity: float | None, seed: int) -> str:
    """The run's folder name; a variant's ``:`` (and any character unsafe in a file name)
    becomes ``_``."""
    method = re.sub(r"[^A-Za-z0-9_.=+-]", "_", method)
    if target_sparsity is None:
        return f"{method}-seed{seed}"
    return f"{method}-{sparsity_label(target_sparsity)}-seed{seed}"


def method_section(base: Config, method: str, target_sparsity: float | None) -> dict[str, Any]:
    """The base config's method options that ``method`` accepts, plus name and target."""
    accepted = {f.name for f in dataclasses.fields(get_method(method).config_class)}
    section: dict[str, Any] = {"name": method}
    dropped = []
    for key, value in base.method.items():
        if key in ("name", "target_sparsity"):
            continue
        if key in accepted:
            section[key] = value
        else:
            dropped.append(key)
    if dropped and base.method.get("name") != method:
        log.debug("method %s: base option(s) %s do not apply, dropped", method, dropped)
    if target_sparsity is not None:
        section["target_sparsity"] = target_sparsity
    return section


def plan_runs(base: Config, grid: Grid) -> list[RunSpec]:
    """Every run of the grid with its validated config (all checked before any training)."""
    runs = []
    for seed in grid.seeds:
        for label, method, options in grid.entries():
            targets: list[float | None] = [None] if method == DENSE else list(grid.sparsities)
            for target in targets:
                section = {**method_section(base, method, target), **options}
                config = dataclasses.replace(base, method=section, seed=seed)
                try:
                    config.validate()
                except ConfigError as err:
                    raise ConfigError(f"compare: {run_name(label, target, seed)}: {err}") \
                        from err
                runs.append(RunSpec(run_name(label, target, seed), label, target, seed,
                                    config))
    return runs


# --------------------------------------------------------------------------- running
@contextlib.contextmanager
def _log_to(path: Path) -> Iterator[None]:
    """Copy the log records of the block into ``path`` (the run's own ``train.log``)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(path)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s",
                                           datefmt="%H:%M:%S"))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        yield
    finally:
        root.removeHandler(handler)
        handler.close()


def _row(spec: RunSpec, status: str, report: dict[str, Any] | None = None,
         error: str = "") -> dict[str, Any]:
    report = report or {}
    return {"run": spec.name, "method": spec.method, "target_sparsity": spec.target_sparsity,
            "seed": spec.seed, "status": status,
            "test_accuracy": report.get("test_accuracy"),
            "global_sparsity": report.get("global_sparsity"),
            "train_seconds": report.get("train_seconds"), "epochs": report.get("epochs"),
            "error": error, "layers": report.get("layers")}


def run_one(spec: RunSpec, run_dir: Path,
            train_missing: bool = True) -> tuple[dict[str, Any], str]:
    """Train (or resume, or reuse) one run; returns its result row and what was done:
    ``cached``, ``resumed``, ``trained``, ``failed`` or (``train_missing=False``) ``missing``."""
    from aswl.runs import (
        RunDirError,
        changed_settings,
        has_checkpoint,
        prepare_run,
        run_directory,
    )
    from aswl.train import train

    report_path = run_dir / "report.json"
    if report_path.is_file():
        stale = changed_settings(run_dir, spec.config)
        try:
            report = json.loads(report_path.read_text())
        except (OSError, ValueError, RecursionError) as err:  # bad JSON, not UTF-8, too deep
            log.error("%s: report.json unreadable (%s); delete %s to retrain it",
                      spec.name, err, run_dir)
            return _row(spec, "failed", error=f"unreadable report.json: {err}"), "failed"
        if stale:
            message = (f"finished with other settings for {stale}; delete {run_dir} to "
                       "retrain it with the current ones")
            log.warning("%s: %s", spec.name, message)
            return _row(spec, "stale", report, message), "cached"
        log.info("%s: finished already, reusing %s", spec.name, report_path)
        return _row(spec, "ok", report), "cached"
    if not train_missing:
        return _row(spec, "missing", error="not trained yet (--report-only)"), "missing"
    start = time.time()
    try:
        with run_directory(run_dir):  # one writer per run folder
            # continue from its checkpoint; a start that stopped before its first checkpoint
            # begins again with clean files
            resume = prepare_run(run_dir, resume=has_checkpoint(run_dir), overwrite=True)
            action = "resumed" if resume else "trained"
            log.info("%s: %s", spec.name,
                     "resuming from its checkpoint" if resume else "training")
            with _log_to(run_dir / "train.log"):
                report = train(spec.config, run_dir, resume=resume)
    except KeyboardInterrupt:
        raise
    except Exception as err:  # one failed run must not stop the grid
        log.error("%s failed after %.1fs: %s: %s", spec.name, time.time() - start,
                  type(err).__name__, err, exc_info=not isinstance(err, RunDirError))
        return _row(spec, "failed", error=f"{type(err).__name__}: {err}"), "failed"
    return _row(spec, "ok", report), action


def run_grid(base: Config, grid: Grid, out_dir: str | Path,
             train_missing: bool = True) -> list[dict[str, Any]]:
    """Run (or resume, or reuse) every run of the grid; one result row per run. With
    ``train_missing=False`` only finished runs are read (a table of a grid still running).

    The rows hold the per-layer table under ``layers`` (used by the layer plot, not written to
    ``results.csv``)."""
    out_dir = Path(out_dir)
    specs = plan_runs(base, grid)
    (out_dir / "runs").mkdir(parents=True, exist_ok=True)
    log.info("compare: %d runs (%s x %s x seeds %s) into %s", len(specs),
             ",".join(label for label, _, _ in grid.entries()),
             ",".join(map(sparsity_label, grid.sparsities)),
             ",".join(map(str, grid.seeds)), out_dir)
    rows = []
    counts: dict[str, int] = {}
    for index, spec in enumerate(specs, 1):
        log.info("[%d/%d] %s", index, len(specs), spec.name)
        row, action = run_one(spec, out_dir / "runs" / spec.name, train_missing)
        counts[action] = counts.get(action, 0) + 1
        rows.append(row)
    log.info("compare: %s", ", ".join(f"{counts[a]} {a}" for a in ACTIONS if a in counts))
    return rows


# --------------------------------------------------------------------------- summary
def sort_rows(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Dense first, then methods in their first-seen order, targets ascending, then seeds."""
    order = {m: i for i, m in enumerate(dict.fromkeys(r["method"] for r in rows))}

    def key(row: dict[str, Any]) -> tuple[int, int, float, int]:
        target = row["target_sparsity"]
        return (0 if row["method"] == DENSE else 1, order[row["method"]],
                -1.0 if target is None else target, row["seed"])

    return sorted(rows, key=key)


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per (method, target sparsity), in the rows' method order, targets ascending (dense
    first): accuracy mean and sample std over the finished seeds (in %), mean achieved global
    sparsity, number of finished seeds and of failed and stale ones."""
    groups: dict[tuple[str, float | None], list[dict[str, Any]]] = {}
    for row in sort_rows(rows):
        groups.setdefault((row["method"], row["target_sparsity"]), []).append(row)
    summary = []
    for method, target in groups:
        members = groups[(method, target)]
        done = [r for r in members if r["status"] == "ok"]
        accuracy = [100.0 * r["test_accuracy"] for r in done]
        sparsity = [r["global_sparsity"] for r in done]
        summary.append({
            "method": method, "target_sparsity": target,
            "accuracy_mean": statistics.fmean(accuracy) if accuracy else None,
            "accuracy_std": statistics.stdev(accuracy) if len(accuracy) > 1 else None,
            "sparsity_mean": statistics.fmean(sparsity) if sparsity else None,
            "seeds": len(done),
            "failed": sum(r["status"] == "failed" for r in members),
            "stale": sum(r["status"] == "stale" for r in members),
        })
    return summary


def _fmt(value: Any, spec: str = ".2f", scale: float = 1.0) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return format(scale * value, spec)


def format_summary(summary: list[dict[str, Any]]) -> str:
    """The summary as a Markdown table."""
    lines = ["| method | target sparsity | test accuracy (%) | achieved sparsity (%) | seeds |",
             "|---|---:|---:|---:|---:|"]
    for row in summary:
        if row["accuracy_mean"] is None:
            accuracy = "-"
        elif row["accuracy_std"] is None:  # one seed: no spread to report
            accuracy = f"{row['accuracy_mean']:.2f} (n = 1)"
        else:
            accuracy = f"{row['accuracy_mean']:.2f} ± {row['accuracy_std']:.2f}"
        notes = [f"{row[k]} {k}" for k in ("failed", "stale") if row.get(k)]
        seeds = str(row["seeds"]) + (f" ({', '.join(notes)})" if notes else "")
        target = "-" if row["target_sparsity"] is None else _fmt(row["target_sparsity"], "g",
                                                                   100.0)
        lines.append(f"| {row['method']} | {target} | {accuracy} | "
                     f"{_fmt(row['sparsity_mean'], '.2f', 100.0)} | {seeds} |")
    return "\n".join(lines)


def _write_csv(path: Path, rows: list[dict[str, Any]], fields: list[str]) -> None:
    def fill(file: Any) -> None:
        writer = csv.DictWriter(file, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        for row in rows:
            writer.writerow({k: "" if row.get(k) is None else row[k] for k in fields})

    write_with(path, fill)


def read_results(path: str | Path) -> list[dict[str, Any]]:
    """``results.csv`` back into rows (numbers parsed, empty cells None; no ``layers``)."""
    rows = []
    with open(path, newline="") as file:
        for raw in csv.DictReader(file):
            row: dict[str, Any] = dict(raw)
            for key in ("target_sparsity", "test_accuracy", "global_sparsity", "train_seconds"):
                row[key] = float(raw[key]) if raw[key] else None
            for key in ("seed", "epochs"):
                row[key] = int(raw[key]) if raw[key] else None
            rows.append(row)
    return rows


def write_outputs(rows: list[dict[str, Any]], out_dir: str | Path, grid: Grid,
                  title: str = "") -> list[dict[str, Any]]:
    """``results.csv``, ``summary.csv``, ``summary.md`` and the two plots; returns the summary.

    A plot that cannot be drawn is logged, never raised: the tables are what matters."""
    out_dir = Path(out_dir)
    make_folder(out_dir)
    for name in ("results.csv", "summary.csv", "summary.md", "accuracy_vs_sparsity.png",
                 "layer_sparsity.png"):
        remove_temp_files(out_dir / name)  # left by an interrupted earlier write
    _write_csv(out_dir / "results.csv", sort_rows(rows), RESULT_FIELDS)
    summary = summarize(rows)
    _write_csv(out_dir / "summary.csv", summary, SUMMARY_FIELDS)
    text = [f"# {title}" if title else "# Comparison", "", format_summary(summary), ""]
    failed = [r for r in sort_rows(rows) if r["status"] not in ("ok", "missing")]
    missing = [r["run"] for r in sort_rows(rows) if r["status"] == "missing"]
    if failed or missing:
        text += ["## Not in the summary", ""]
        text += [f"- `{r['run']}` ({r['status']}): {r['error']}" for r in failed]
        if missing:
            text.append(f"- not trained yet ({len(missing)}): {', '.join(missing)}")
        text.append("")
    write_text(out_dir / "summary.md", "\n".join(text))
    for name, draw in (("accuracy_vs_sparsity.png", plot_accuracy_vs_sparsity),
                       ("layer_sparsity.png", plot_layer_sparsity)):
        try:
            draw(rows, summary, grid, out_dir / name, title)
        except Exception as err:  # a plot must never lose the tables
            log.warning("could not draw %s: %s", name, err)
    return summary


def describe(base: Config) -> str:
    """One line naming the shared setting, for titles."""
    return (f"{base.model} / {base.dataset} / {base.epochs} "
            f"epoch{'s' if base.epochs != 1 else ''}")
