"""kill -9 at random points of training: no lost or corrupt checkpoint, bit-exact resume.

    .venv/bin/python benchmarks/kill9.py                      # 12 trials, seed 0
    .venv/bin/python benchmarks/kill9.py --trials 20 --seed 1 --kills 2

One uninterrupted reference run, then ``--trials`` runs of the same job, each killed with
SIGKILL ``--kills`` times at random points of its training (uniform in epochs, from where the
run starts to one epoch past the last, so that some kills fall in the final export; an epoch's
fraction is timed with the epoch length just seen) and resumed with
``aswl train --out DIR --resume`` (no settings: the run's own) after each kill, then resumed to
the end. After every kill:

- ``checkpoints/last.pt`` loads (its SHA-256 matches) unless no epoch had finished yet;
- its epoch never goes back (no checkpoint lost) and lags ``metrics.jsonl`` by at most the one
  epoch whose line was written just before its checkpoint;
- any temporary file the kill left is gone after the next start.

At the end every tensor of ``model.safetensors`` must equal the reference bit for bit. The
table lists, per trial, the kill points (in epochs), the checkpoint epoch
found after each kill and the temporary files left; the exit status is 1 if any check failed.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from safetensors.torch import load_file

from aswl.train import CheckpointError, load_checkpoint

EPOCHS = 6
JOB = ["progress=false", f"epochs={EPOCHS}", "data.limit_train=1000", "seed=3"]


def _command(out: Path, resume: bool) -> list[str]:
    """Resume with the run's own settings; a run killed before it saved any (no checkpoint,
    no config.yaml: ``--resume`` refuses) is started again with them, as the error says."""
    saved = (out / "checkpoints" / "last.pt").is_file() or (out / "config.yaml").is_file()
    settings = ["--resume"] if resume and saved else ["--set", *JOB]
    return [sys.executable, "-m", "aswl", "train", "--out", str(out), *settings]


def _env() -> dict[str, str]:
    src = str(Path(__file__).resolve().parents[1] / "src")
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "OMP_NUM_THREADS": "1",
            "PYTHONPATH": src + (os.pathsep + path if path else "")}


def _start(out: Path, resume: bool) -> subprocess.Popen:
    return subprocess.Popen(_command(out, resume), env=_env(), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)


def _epochs_logged(out: Path) -> int:
    try:
        return len((out / "metrics.jsonl").read_text().splitlines())
    except OSError:
        return 0


def _wait_first_epoch(proc: subprocess.Popen, out: Path, floor: int) -> float:
    """Wait until metrics.jsonl has more than ``floor`` lines (or the process ends)."""
    while proc.poll() is None and _epochs_logged(out) <= floor:
        time.sleep(0.01)
    return time.time()


def reference(out: Path) -> tuple[dict[str, torch.Tensor], float]:
    """The uninterrupted run: its weights and its mean seconds per epoch."""
    proc = _start(out, resume=False)
    first = _wait_first_epoch(proc, out, 0)
    last = first
    while proc.poll() is None:
        if _epochs_logged(out) < EPOCHS:
            last = time.time()
        time.sleep(0.005)
    if proc.returncode != 0:
        raise SystemExit(f"the reference run failed: {' '.join(_command(out, False))}")
    return load_file(str(out / "model.safetensors")), (last - first) / (EPOCHS - 1)


def kill_at(proc: subprocess.Popen, out: Path, point: float, per_epoch: float) -> None:
    """SIGKILL ``proc`` at ``point`` epochs into training (2.5: half-way through epoch 3;
    past EPOCHS: during the final export). The fraction of an epoch is timed with the
    epoch length seen last in this process (the load of a shared machine changes it)."""
    whole, seen, changed, lengths = int(point), _epochs_logged(out), None, []
    while proc.poll() is None and seen < whole:
        time.sleep(0.005)
        now_seen = _epochs_logged(out)
        if now_seen != seen:
            now = time.time()
            if changed is not None:
                lengths.append(now - changed)
            changed, seen = now, now_seen
    deadline = time.time() + (point - whole) * (lengths[-1] if lengths else per_epoch)
    while proc.poll() is None and time.time() < deadline:
        time.sleep(0.002)
    if proc.poll() is None:
        proc.send_signal(signal.SIGKILL)
    proc.wait()


def check_after_kill(out: Path, last_epoch: int) -> tuple[int, int, list[str]]:
    """(checkpoint epoch, temp files left, problems) right after a kill."""
    problems = []
    path = out / "checkpoints" / "last.pt"
    epoch = 0
    if path.is_file():
        try:
            epoch = int(load_checkpoint(path)["epoch"])
        except CheckpointError as err:
            problems.append(f"corrupt checkpoint: {err}")
    if epoch < last_epoch:
        problems.append(f"checkpoint went back from epoch {last_epoch} to {epoch}")
    logged = _epochs_logged(out)
    if not (report_done := (out / "report.json").is_file()) and logged - epoch not in (0, 1):
        problems.append(f"metrics.jsonl has {logged} epochs, checkpoint epoch {epoch}")
    if report_done and epoch == 0:
        problems.append("report.json without a checkpoint")
    temps = [p for p in out.rglob("*.tmp")]
    return epoch, len(temps), problems


def trial(out: Path, rng: random.Random, per_epoch: float, kills: int,
          ref: dict[str, torch.Tensor]) -> dict[str, object]:
    points, epochs, temps, problems = [], [], [], []
    last_epoch = 0
    for k in range(kills):
        point = rng.uniform(last_epoch, EPOCHS + 1)
        kill_at(_start(out, resume=k > 0), out, point, per_epoch)
        points.append(point)
        epoch, left, found = check_after_kill(out, last_epoch)
        last_epoch = max(last_epoch, epoch)
        epochs.append(epoch)
        temps.append(left)
        problems += found
    for _ in range(3):  # resume to the end
        if subprocess.run(_command(out, resume=True), env=_env(), stdout=subprocess.DEVNULL,
                          stderr=subprocess.DEVNULL).returncode == 0:
            break
    else:
        problems.append("resume did not finish")
    if list(out.rglob("*.tmp")):
        problems.append("temporary files left after the resumed run")
    exact = False
    if (out / "model.safetensors").is_file():
        final = load_file(str(out / "model.safetensors"))
        exact = final.keys() == ref.keys() and all(torch.equal(final[k], ref[k]) for k in ref)
    if not exact:
        problems.append("resumed weights differ from the reference")
    return {"points": points, "epochs": epochs, "temps": temps, "exact": exact,
            "problems": problems}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--kills", type=int, default=1, help="kills per trial")
    parser.add_argument("--seed", type=int, default=0, help="seed of the kill times")
    parser.add_argument("--work", type=Path, help="folder for the runs (default: a temp dir)")
    args = parser.parse_args()
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory() as tmp:
        work = args.work or Path(tmp)
        ref, per_epoch = reference(work / "reference")
        print(f"job: aswl train --set {' '.join(JOB)}; reference {per_epoch:.2f} s per epoch; "
              f"{args.trials} trials x {args.kills} kills, seed {args.seed}\n")
        print("| trial | killed at (epochs into training) | checkpoint epoch after each kill "
              "| .tmp left | bit-exact | problems |")
        print("|---|---|---|---|---|---|")
        failed = 0
        for i in range(args.trials):
            result = trial(work / f"trial{i}", rng, per_epoch, args.kills, ref)
            failed += bool(result["problems"])
            print(f"| {i} | {', '.join(f'{t:.2f}' for t in result['points'])} "
                  f"| {', '.join(map(str, result['epochs']))} "
                  f"| {', '.join(map(str, result['temps']))} "
                  f"| {'yes' if result['exact'] else 'NO'} "
                  f"| {json.dumps(result['problems']) if result['problems'] else '-'} |",
                  flush=True)
    print(f"\n{args.trials - failed} of {args.trials} trials passed every check")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
