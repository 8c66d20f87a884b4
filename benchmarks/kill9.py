"""kill -9 at random points of training: no lost or corrupt checkpoint, bit-exact resume.

    .venv/bin/python benchmarks/kill9.py                      # 12 trials, seed 0
    .venv/bin/python benchmarks/kill9.py --trials 20 --seed 1 --kills 2

One uninterrupted reference run, then ``--trials`` runs of the same job, each killed with
SIGKILL ``--kills`` times at random moments of its training (uniform over the training part of
the reference run from its first finished epoch to one epoch after its last, so that a few
kills fall in the final export) and resumed with
``aswl train --out DIR --resume`` after each kill, then resumed to the end. After every kill:

- ``checkpoints/last.pt`` loads (its SHA-256 matches) unless no epoch had finished yet;
- its epoch never goes back (no checkpoint lost) and lags ``metrics.jsonl`` by at most the one
  epoch whose line was written just before its checkpoint;
- any temporary file the kill left is gone after the next start.

At the end every tensor of ``model.safetensors`` must equal the reference bit for bit. The
table lists, per trial, the kill times (seconds after the first epoch), the checkpoint epoch
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

EPOCHS = 8
JOB = ["progress=false", f"epochs={EPOCHS}", "seed=3"]


def _command(out: Path, resume: bool) -> list[str]:
    return [sys.executable, "-m", "aswl", "train", "--out", str(out), "--set", *JOB,
            *(["--resume"] if resume else [])]


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
    """The uninterrupted run: its weights and the seconds from its first to its last epoch
    line, plus one epoch (the span in which the kills fall)."""
    proc = _start(out, resume=False)
    first = _wait_first_epoch(proc, out, 0)
    last = first
    while proc.poll() is None:
        if _epochs_logged(out) < EPOCHS:
            last = time.time()
        time.sleep(0.005)
    if proc.returncode != 0:
        raise SystemExit(f"the reference run failed: {' '.join(_command(out, False))}")
    return load_file(str(out / "model.safetensors")), (last - first) * EPOCHS / (EPOCHS - 1)


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


def trial(out: Path, rng: random.Random, span: float, kills: int,
          ref: dict[str, torch.Tensor]) -> dict[str, object]:
    times, epochs, temps, problems = [], [], [], []
    last_epoch = 0
    for k in range(kills):
        proc = _start(out, resume=k > 0)
        first = _wait_first_epoch(proc, out, last_epoch if k else 0)
        delay = rng.uniform(0.0, span)
        while proc.poll() is None and time.time() - first < delay:
            time.sleep(0.002)
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        times.append(delay)
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
    return {"times": times, "epochs": epochs, "temps": temps, "exact": exact,
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
        ref, span = reference(work / "reference")
        print(f"job: aswl train --set {' '.join(JOB)}; kills within {span:.2f} s of epoch 1; "
              f"{args.trials} trials x {args.kills} kills, seed {args.seed}\n")
        print("| trial | kill times (s after epoch 1) | checkpoint epoch after each kill "
              "| .tmp left | bit-exact | problems |")
        print("|---|---|---|---|---|---|")
        failed = 0
        for i in range(args.trials):
            result = trial(work / f"trial{i}", rng, span, args.kills, ref)
            failed += bool(result["problems"])
            print(f"| {i} | {', '.join(f'{t:.2f}' for t in result['times'])} "
                  f"| {', '.join(map(str, result['epochs']))} "
                  f"| {', '.join(map(str, result['temps']))} "
                  f"| {'yes' if result['exact'] else 'NO'} "
                  f"| {json.dumps(result['problems']) if result['problems'] else '-'} |",
                  flush=True)
    print(f"\n{args.trials - failed} of {args.trials} trials passed every check")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
