"""The end of a run, the trainer's collaborator: the best-validation model back (with
``select: best_val``), the method's final masks, export, the report, and (rank 0) the run
folder's files: ``model.safetensors``, ``model.sparse.safetensors``, ``report.json``,
``training.png``.
"""

from __future__ import annotations

import json
import logging
from typing import TYPE_CHECKING, Any

from torch import nn

from aswl.export import format_table, layer_table, save_compact, save_dense
from aswl.io import write_text
from aswl.train.checkpoint import load_checkpoint
from aswl.train.data_loop import evaluate

if TYPE_CHECKING:
    from aswl.train.loop import Trainer

log = logging.getLogger(__name__)


def finish_run(trainer: Trainer, seconds: float) -> tuple[dict[str, Any], nn.Module]:
    """Final masks, export, report, files; returns the report and the exported plain model.
    ``seconds``: the training time the report gives."""
    config, method, data = trainer.config, trainer.method, trainer.data
    best_path = trainer.out_dir / "checkpoints" / "best.pt"
    if config.select == "best_val" and best_path.is_file():
        best = load_checkpoint(best_path, trainer.device)
        trainer.model.load_state_dict(best["model"])
        method.load_state_dict(best["method"])

    def accuracy(model: nn.Module, split: Any, workers: bool = True) -> float:
        extra = (config.data.workers,) if workers else ()
        return evaluate(model, split, config.batch_size, trainer.device, trainer.dist, *extra)

    # the model as trained, before finalize() sets its final masks: their accuracy gap
    # is what finalize costs (a method that freezes its masks changes nothing here)
    before_masks = {name: m.clone() for name, m in method.mask_state().items()}
    before_accuracy = accuracy(trainer.model, data.test)
    method.finalize()
    changed = sum(int((m != before_masks[name]).sum())
                  for name, m in method.mask_state().items())
    plain = method.export()
    names = list(method.layers)
    test_accuracy = accuracy(plain, data.test)
    layers = layer_table(plain, names, data.input_shape, method.attentions(),
                         reference=trainer.model)
    total = sum(r["numel"] for r in layers)
    nonzero = sum(r["nonzero"] for r in layers)
    report: dict[str, Any] = {
        "method": config.method_name(), "model": config.model, "dataset": config.dataset,
        "seed": config.seed, "epochs": config.epochs,
        "target_sparsity": getattr(method.config, "target_sparsity", None),
        "test_accuracy": test_accuracy,
        "test_accuracy_before_finalize": before_accuracy,
        "mask_changes_at_finalize": changed,
        "val_accuracy": (accuracy(plain, data.val, workers=False)
                         if data.val is not None else None),
        "global_sparsity": 1 - nonzero / max(1, total),
        "prunable_weights": total, "nonzero_weights": nonzero,
        "flops_dense": sum(r["flops_dense"] for r in layers),
        "flops_sparse": sum(r["flops_sparse"] for r in layers),
        "train_seconds": seconds, "device": str(trainer.device),
        "world_size": trainer.dist.world_size, "layers": layers,
    }
    if trainer.dist.main:
        write_files(trainer, plain, report)
        log.info("finalize changed %d mask entries; test accuracy %.2f%% before it",
                 changed, 100 * before_accuracy)
        log.info("final layers:\n%s", format_table(layers))
        log.info("test accuracy %.2f%%, global sparsity %.2f%%, %d -> %d bytes, wrote %s",
                 100 * test_accuracy, 100 * report["global_sparsity"],
                 report["dense_bytes"], report["sparse_bytes"], trainer.out_dir)
    return report, plain


def write_files(trainer: Trainer, plain: nn.Module, report: dict[str, Any]) -> None:
    """The run folder's model files, ``report.json`` (with the files' sizes added to
    ``report``) and ``training.png``."""
    config, out_dir = trainer.config, trainer.out_dir
    record = trainer.method.export_metadata()  # a slimmed model's channel record
    report["dense_bytes"] = save_dense(plain, out_dir / "model.safetensors", record)
    report["sparse_bytes"] = save_compact(plain, list(trainer.method.layers),
                                          out_dir / "model.sparse.safetensors", extra=record)
    write_text(out_dir / "report.json", json.dumps(report, indent=2))
    try:
        from aswl.export.plot import plot_run

        plot_run(trainer.history, report["layers"], out_dir / "training.png",
                 f"{config.method_name()} / {config.model} / {config.dataset}")
    except ImportError:
        log.info("training.png skipped: matplotlib is not installed (pip install aswl[plot])")
    except Exception as err:  # a plot must never lose a finished run
        log.warning("could not draw training.png: %s", err)
