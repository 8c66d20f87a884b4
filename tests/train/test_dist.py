"""DDP on CPU (gloo, 2 processes): masks, attentions and weights agree on both ranks at every
step, only rank 0 writes files, an interrupted DDP run resumes to the very same weights as an
uninterrupted one, and the real entry point (``torchrun -m aswl train``) works."""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from safetensors.torch import load_file

from aswl.train import load_config
from aswl.train.loop import Trainer

WORLD = 2
OVERRIDES = ["dataset=synthetic", "device=cpu", "epochs=2", "progress=false", "batch_size=8",
             "data.limit_train=48", "data.limit_test=20", "method.target_sparsity=0.9",
             "method.mask_interval=2"]
# 48 samples / 2 ranks / batch 8: 3 steps per epoch on each rank.

pytestmark = [pytest.mark.skipif(not dist.is_available(), reason="torch.distributed missing"),
              pytest.mark.slow]  # several processes per run: the full suite (-m "") runs them


class Interrupted(Exception):
    """Stands for a crash or Ctrl-C between two epochs."""


class StopAt(Trainer):
    """A Trainer that dies when it is about to start epoch ``stop_at`` (0-based)."""

    stop_at = 1

    def train_epoch(self) -> dict[str, float]:
        if self.epoch == self.stop_at:
            raise Interrupted
        return super().train_epoch()


def _digest(tensors) -> str:
    sha = hashlib.sha256()
    for tensor in tensors:
        sha.update(tensor.detach().cpu().contiguous().view(-1).numpy().tobytes())
    return sha.hexdigest()


def _record_steps(trainer: Trainer) -> list[dict[str, str]]:
    """After every method step: digests of the masks + attentions, and of all weights."""
    method, steps = trainer.method, []
    step = method.step

    def recording_step(optimizer: object = None) -> None:
        step(optimizer)
        masks = [method.masks[name].mask for name in method.layers]
        attentions = method.parameters()
        steps.append({"masks": _digest(masks), "attentions": _digest(attentions),
                      "weights": _digest(trainer.model.state_dict().values()),
                      "attention_values": [float(a) for a in attentions]})

    method.step = recording_step
    return steps


def _worker(rank: int, world: int, port: int, tmp: str, job: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      LOCAL_RANK=str(rank), WORLD_SIZE=str(world))
    torch.set_num_threads(1)
    root = Path(tmp)
    out = {}
    if job == "uninterrupted":  # the Trainer creates (and at the end destroys) the group
        trainer = Trainer(load_config(None, OVERRIDES), root / "full" / f"rank{rank}")
        out["steps"] = _record_steps(trainer)
        report = trainer.fit()
        out["group_left_open"] = dist.is_initialized()
    else:  # one group for several Trainers: interrupted, resumed, then the paper variant
        dist.init_process_group("gloo")
        run = root / "resumed"
        try:
            StopAt(load_config(None, OVERRIDES), run / f"rank{rank}").fit()
        except Interrupted:
            pass
        dist.barrier()  # rank 0 has written the epoch-1 checkpoint
        trainer = Trainer(load_config(None, OVERRIDES), run / f"rank{rank}")
        trainer.resume(run / "rank0" / "checkpoints" / "last.pt")  # every rank reads rank 0's
        out["resumed_at"] = trainer.epoch
        out["resumed_steps"] = _record_steps(trainer)
        trainer.fit()
        paper = Trainer(load_config(None, [*OVERRIDES, "method.name=aswl_paper"]),
                        root / "paper" / f"rank{rank}")
        out["steps"] = _record_steps(paper)
        report = paper.fit()
        out["group_left_open"] = dist.is_initialized()
        dist.destroy_process_group()
    last = trainer if job == "uninterrupted" else paper
    out["test_accuracy"] = report["test_accuracy"]
    out["final"] = _digest(last.plain_model.state_dict().values())
    (root / f"{job}_rank{rank}.json").write_text(json.dumps(out))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _spawn(job: str, tmp: Path, timeout: float = 90) -> list[dict]:
    context = mp.start_processes(_worker, args=(WORLD, _free_port(), str(tmp), job),
                                 nprocs=WORLD, join=False, start_method="spawn")
    deadline = time.monotonic() + timeout
    while not context.join(timeout=1):
        if time.monotonic() > deadline:
            for process in context.processes:
                process.kill()
            pytest.fail(f"DDP job {job!r} did not finish in {timeout} s (a rank is stuck)")
    return [json.loads((tmp / f"{job}_rank{r}.json").read_text()) for r in range(WORLD)]


def _assert_ranks_agree(ranks: list[dict], key: str = "steps") -> None:
    first, second = ranks[0][key], ranks[1][key]
    assert len(first) == len(second) == 6  # 2 epochs x 3 steps on each rank
    for step, (a, b) in enumerate(zip(first, second, strict=True)):
        for what in ("masks", "attentions", "weights"):
            assert a[what] == b[what], f"{what} differ between ranks after step {step + 1}"
    # not vacuous: the masks follow the sparsity ramp and the attentions learn
    assert len({s["masks"] for s in first}) > 1
    assert len({s["attentions"] for s in first}) > 1


@pytest.fixture(scope="module")
def ddp_runs(tmp_path_factory) -> tuple[Path, list[dict], list[dict]]:
    tmp = tmp_path_factory.mktemp("ddp")
    return tmp, _spawn("uninterrupted", tmp), _spawn("resume", tmp)


def test_masks_attentions_and_weights_agree_on_every_step(ddp_runs) -> None:
    _, full, resumed = ddp_runs
    _assert_ranks_agree(full)  # ASWL target: attentions are not DDP parameters
    _assert_ranks_agree(resumed)  # ASWL paper: attentions scale outputs, DDP averages them
    for ranks in (full, resumed):
        assert ranks[0]["final"] == ranks[1]["final"]
        assert ranks[0]["test_accuracy"] == ranks[1]["test_accuracy"]


def test_only_rank_0_writes_files(ddp_runs) -> None:
    tmp, _, _ = ddp_runs
    for run in ("full", "resumed", "paper"):
        written = {p.name for p in (tmp / run / "rank0").iterdir()}
        assert {"config.yaml", "metrics.jsonl", "report.json", "model.safetensors",
                "checkpoints"} <= written
        assert not (tmp / run / "rank1").exists()
    lines = (tmp / "full" / "rank0" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert json.loads((tmp / "full" / "rank0" / "report.json").read_text())["world_size"] == 2


def test_process_group_destroyed_only_by_its_owner(ddp_runs) -> None:
    _, full, resumed = ddp_runs
    assert not any(rank["group_left_open"] for rank in full)  # Trainer made it: gone
    assert all(rank["group_left_open"] for rank in resumed)  # the caller's: left open


def test_resume_under_ddp_gives_the_uninterrupted_weights(ddp_runs) -> None:
    tmp, full, resumed = ddp_runs
    assert [rank["resumed_at"] for rank in resumed] == [1, 1]
    # the resumed epoch is step for step the uninterrupted run's second epoch, on both ranks
    for rank in range(WORLD):
        assert resumed[rank]["resumed_steps"] == full[rank]["steps"][3:]
    lines = (tmp / "resumed" / "rank0" / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    a = load_file(str(tmp / "full" / "rank0" / "model.safetensors"))
    b = load_file(str(tmp / "resumed" / "rank0" / "model.safetensors"))
    assert a.keys() == b.keys()
    for key in a:
        assert torch.equal(a[key], b[key]), key


def test_torchrun_cli_trains_and_resumes(tmp_path: Path) -> None:
    """The real entry point: torchrun -m aswl train, then --resume for one more epoch."""
    out = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    base = [sys.executable, "-m", "torch.distributed.run", "--standalone",
            f"--nproc_per_node={WORLD}", "-m", "aswl", "train", "--out", str(out)]
    settings = [o for o in OVERRIDES if not o.startswith("epochs")]
    for extra in (["--set", *settings, "epochs=1"], ["--resume", "--set", "epochs=2"]):
        done = subprocess.run(base + extra, env=env, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr[-3000:]
        assert "broadcast_buffers" not in done.stderr  # no deprecated DDP argument
    report = json.loads((out / "report.json").read_text())
    assert report["world_size"] == 2 and report["epochs"] == 2
    lines = (out / "metrics.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]
    assert "resumed from" in (out / "train.log").read_text()
