"""The trainer: builds a run from its config and drives :func:`~aswl.train.step.training_step`.

One process, one GPU, or many processes under ``torchrun`` (PyTorch DDP, see
:mod:`aswl.train.dist`); only rank 0 writes files. Batching and evaluation are in
:mod:`aswl.data.loader`, the run folder in :mod:`aswl.runs`, the optimiser and learning rate
in :mod:`aswl.train.optim`; :class:`~aswl.train.Callback` hooks extend a run.
"""

from __future__ import annotations

import functools
import json
import logging
import math
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from aswl.config import RESUMABLE_KEYS, Config
from aswl.data import Datasets, build_datasets
from aswl.methods import create_method
from aswl.models import create_model
from aswl.runs import CHECKPOINT, check_resume, start_fresh, write_config
from aswl.train.callbacks import Callback
from aswl.train.checkpoint import load_checkpoint, read_checkpoint_header, save_checkpoint
from aswl.train.data_loop import batches, evaluate, steps_per_epoch
from aswl.train.dist import TrainingError, resolve_device, setup_distributed
from aswl.train.finish import finish_run
from aswl.train.init_weights import load_initial_weights
from aswl.train.launch import sigterm_kills
from aswl.train.loggers import build_loggers
from aswl.train.optim import build_optimizer, lr_factor
from aswl.train.provenance import data_fingerprint, warn_if_data_changed
from aswl.train.step import training_step

log = logging.getLogger(__name__)


def _is_terminal(stream: Any) -> bool:
    """True when ``stream`` is an interactive terminal (a progress bar is wanted there only)."""
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


# --------------------------------------------------------------------------- the run
class Trainer:
    """Builds everything from a :class:`Config` and runs it, writing into ``out_dir``.

    ``data``: datasets to use instead of building ``config.dataset`` (a benchmark that holds
    one split in memory across many runs). ``callbacks``: :class:`~aswl.train.Callback`
    hooks called at the start, after each step and after each epoch.
    """

    def __init__(self, config: Config, out_dir: str | Path, *, data: Datasets | None = None,
                 callbacks: Sequence[Callback] = ()) -> None:
        self.config = config
        self.out_dir = Path(out_dir)
        self.callbacks = list(callbacks)
        self.dist = setup_distributed(config.device)
        self.device = resolve_device(config.device, self.dist)
        torch.manual_seed(config.seed)
        self.data: Datasets = data if data is not None else build_datasets(
            config.dataset, config.data.root, download=config.data.download,
            augment=config.data.augment, val_fraction=config.data.val_fraction,
            seed=config.seed, limit_train=config.data.limit_train,
            limit_test=config.data.limit_test, image_size=config.data.image_size)
        self.model = create_model(config.model, num_classes=self.data.num_classes,
                                  input_shape=self.data.input_shape,
                                  **config.model_args)
        if config.init:  # prune a trained model: its weights before the masks are attached
            load_initial_weights(self.model, config.init)
        self.model = self.model.to(self.device)
        self.per_epoch = steps_per_epoch(self.data.train, config.batch_size, self.dist,
                                         limit=config.data.epoch_samples)
        self.total_steps = self.per_epoch * config.epochs
        structure = config.method_structure()
        traced = ({"example_inputs": torch.zeros(1, *self.data.input_shape, device=self.device)}
                  if structure == "channel" else {})
        self.method = create_method(config.method_name(), self.model, structure=structure,
                                    **traced,
                                    total_steps=self.total_steps,
                                    config=config.method_config())
        self.optimizer = build_optimizer(config, self.method)
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=config.amp == "fp16")
        self.train_model: nn.Module = self.model
        if self.dist.enabled:
            from torch.nn.parallel import DistributedDataParallel

            ids = [self.device.index] if self.device.type == "cuda" else None
            # Buffers (masks, BN statistics) are broadcast from rank 0 at every forward by
            # default; `broadcast_buffers=True` is deprecated in newer torch.
            self.train_model = DistributedDataParallel(self.model, device_ids=ids)
        self.epoch = 0
        self.history: list[dict[str, Any]] = []
        self.best_val = -1.0

    # -- checkpoints ---------------------------------------------------------------------
    @property
    def checkpoint_path(self) -> Path:
        return self.out_dir / CHECKPOINT

    def state(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch, "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(), "method": self.method.state_dict(),
            "scaler": self.scaler.state_dict(), "rng": torch.get_rng_state(),
            "cuda_rng": (torch.cuda.get_rng_state_all() if torch.cuda.is_available() else []),
            "history": json.dumps(self.history), "best_val": self.best_val,
            "config": json.dumps(self.config.to_dict()), "data": json.dumps(self.fingerprint),
        }

    @functools.cached_property
    def fingerprint(self) -> dict[str, Any]:
        """The data's sizes and sample hashes (:mod:`aswl.train.provenance`)."""
        return data_fingerprint(self.data)

    def resume(self, path: str | Path | None = None) -> None:
        """Build -> attach -> load: continue a run from its last checkpoint."""
        state = load_checkpoint(path or self.checkpoint_path, map_location=self.device)
        check_resume(json.loads(state["config"]), self.config, path or self.checkpoint_path,
                     int(state["epoch"]))
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.method.load_state_dict(state["method"])
        self.scaler.load_state_dict(state["scaler"])
        torch.set_rng_state(state["rng"].cpu())
        if state.get("cuda_rng") and torch.cuda.is_available():
            torch.cuda.set_rng_state_all([r.cpu() for r in state["cuda_rng"]])
        self.epoch = int(state["epoch"])
        self.history = json.loads(state["history"])
        self.best_val = float(state["best_val"])
        if isinstance(state.get("data"), str):
            warn_if_data_changed(json.loads(state["data"]), self.fingerprint,
                                 str(path or self.checkpoint_path))
        log.info("resumed from %s at epoch %d", path or self.checkpoint_path, self.epoch)

    # -- one epoch -----------------------------------------------------------------------
    def train_epoch(self) -> dict[str, float]:
        config, model, method = self.config, self.train_model, self.method
        model.train()
        amp_dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(config.amp)
        loss_sum = torch.zeros((), device=self.device)
        correct = torch.zeros((), device=self.device)
        seen = 0

        progress = None
        if config.progress and self.dist.main and _is_terminal(sys.stderr):
            from tqdm import tqdm  # a bar only on a terminal; piped output gets the epoch lines

            progress = tqdm(total=self.per_epoch, desc=f"epoch {self.epoch + 1}/{config.epochs}",
                            leave=False, dynamic_ncols=True, file=sys.stderr)
        for images, labels in batches(self.data.train, config.batch_size, shuffle=True,
                                      seed=config.seed, epoch=self.epoch, dist=self.dist,
                                      device=self.device, workers=config.data.workers,
                                      augment=config.data.augment,
                                      limit=config.data.epoch_samples):
            step = self.epoch * self.per_epoch + seen
            for group in self.optimizer.param_groups:
                group["lr"] = config.lr * lr_factor(config, step, self.total_steps,
                                                    self.per_epoch)
            result = training_step(model, method, self.optimizer, images, labels,
                                   scaler=self.scaler, grad_clip=config.grad_clip,
                                   amp_dtype=amp_dtype,
                                   check_loss=functools.partial(self._check_loss, step=step))
            loss_sum += result.task_loss * labels.numel()
            correct += (result.outputs.argmax(1) == labels).sum()
            seen += 1
            for callback in self.callbacks:
                callback.on_step(self, step + 1, result.task_loss)
            if progress is not None:
                progress.update(1)
        if progress is not None:
            progress.close()
        samples = max(1, seen * config.batch_size)
        epoch_size = len(self.data.train) if config.data.epoch_samples is None else \
            min(len(self.data.train), config.data.epoch_samples)
        samples = min(samples, math.ceil(epoch_size / self.dist.world_size))
        return {"train_loss": float(loss_sum) / samples, "train_accuracy": float(correct) / samples}

    def _check_loss(self, loss: Tensor, step: int) -> None:
        if not self._finite_on_every_rank(loss):
            raise TrainingError(self._divergence_message(float(loss.detach()), step))

    def _divergence_message(self, loss: float, step: int) -> str:
        """What diverged, which checkpoint really exists, and a command that can be run."""
        header = read_checkpoint_header(self.checkpoint_path) or {}
        if isinstance(header.get("epoch"), int):
            kept = f"the last good checkpoint is {self.checkpoint_path} (epoch {header['epoch']})"
            how = "continue from it"
        else:
            kept = "no checkpoint was written yet"
            how = "start it again from its config.yaml"
        lr = self.config.lr / 10
        return (f"loss became {loss} at epoch {self.epoch + 1}, step {step}; {kept}. To {how} "
                f"with a lower learning rate and gradient clipping: aswl train --out "
                f"{self.out_dir} --resume --set lr={lr:g} grad_clip=1.0 (a resume may change "
                f"{', '.join(sorted(RESUMABLE_KEYS))}); a lower method.attention_lr or "
                "amp=none needs a new run (another --out)")

    def _finite_on_every_rank(self, loss: Tensor) -> bool:
        """Is the loss finite on every rank (so that all ranks stop together)?"""
        finite = torch.isfinite(loss.detach()).float()
        if self.dist.enabled:
            import torch.distributed as dist

            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        return bool(finite > 0)

    # -- the whole run -------------------------------------------------------------------
    def fit(self) -> dict[str, Any]:
        config = self.config
        if self.dist.main:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            write_config(self.out_dir, config)
            if self.epoch == 0:  # a fresh start: no metric lines of an earlier attempt
                start_fresh(self.out_dir)
        # epochs after the checkpoint (of an interrupted run) are dropped from every log
        self.loggers = build_loggers(config.log, self.out_dir, self.history) \
            if self.dist.main else []
        log.info("model %s on %s, %d prunable layers (%d weights), %d steps on %s",
                 config.model, config.dataset, len(self.method.layers),
                 self.method.total_numel, self.total_steps, self.device)
        start = time.time()
        for callback in self.callbacks:
            callback.on_start(self)
        while self.epoch < config.epochs:
            epoch_start = time.time()
            metrics = self.train_epoch()
            self.epoch += 1
            record = {"epoch": self.epoch, **metrics,
                      "global_sparsity": self.method.global_sparsity(),
                      "test_accuracy": evaluate(self.model, self.data.test, config.batch_size,
                                                self.device, self.dist, config.data.workers),
                      "lr": self.optimizer.param_groups[0]["lr"],
                      "attentions": self.method.attentions(),
                      "seconds": time.time() - epoch_start}
            if self.data.val is not None:
                record["val_accuracy"] = evaluate(self.model, self.data.val, config.batch_size,
                                                  self.device, self.dist)
            self.history.append(record)
            log.info("epoch %d/%d  loss %.4f  train %.2f%%  test %.2f%%  sparsity %.2f%%  "
                     "(%.1fs)", self.epoch, config.epochs, record["train_loss"],
                     100 * record["train_accuracy"], 100 * record["test_accuracy"],
                     100 * record["global_sparsity"], record["seconds"])
            for callback in self.callbacks:
                callback.on_epoch(self, record)
            if self.dist.main:
                for logger in self.loggers:
                    logger.log(record)
                self._maybe_keep_best(record)
                if self.epoch % config.checkpoint_every == 0 or self.epoch == config.epochs:
                    save_checkpoint(self.state(), self.checkpoint_path)
        for logger in self.loggers:
            logger.close()
        if self.dist.enabled:  # rank 0 may still be writing best.pt, which finish() reads
            import torch.distributed as dist

            with sigterm_kills():  # a Python handler could not run while C++ waits
                dist.barrier()
        # the epochs' own times (kept in the checkpoint's history): right after any resume
        report = self.finish(sum(r.get("seconds", 0.0) for r in self.history)
                             if self.history else time.time() - start)
        if self.dist.enabled:
            with sigterm_kills():
                dist.barrier()
            if self.dist.owns_group:
                dist.destroy_process_group()
        return report

    def _maybe_keep_best(self, record: dict[str, Any]) -> None:
        """With a validation split: keep the best-validation model once the method's schedule
        is done (``method.schedule.done``), so it is never a model
        that ``finish()`` would still have to prune."""
        if self.config.select != "best_val":
            return
        done = self.method.schedule.done(self.epoch * self.per_epoch)
        if done and record["val_accuracy"] > self.best_val:
            self.best_val = record["val_accuracy"]
            save_checkpoint(self.state(), self.out_dir / "checkpoints" / "best.pt")

    def finish(self, seconds: float) -> dict[str, Any]:
        """Final masks, export, report, files (:func:`aswl.train.finish.finish_run`); the
        exported plain model is kept as ``plain_model``."""
        report, self.plain_model = finish_run(self, seconds)
        return report


def train(config: Config, out_dir: str | Path, resume: bool = False, *,
          data: Datasets | None = None, callbacks: Sequence[Callback] = ()) -> dict[str, Any]:
    """Run one experiment from a validated config; returns the report. ``data`` and
    ``callbacks``: see :class:`Trainer`."""
    trainer = Trainer(config, out_dir, data=data, callbacks=callbacks)
    if resume:
        trainer.resume()
    return trainer.fit()
