"""Per-epoch metric loggers, chosen by the run config's ``log`` list.

``jsonl`` writes ``metrics.jsonl`` (one JSON object per epoch, attentions nested), ``csv``
writes ``metrics.csv`` (one row per epoch, one ``attention/<layer>`` column per layer) and
``tensorboard`` writes event files under ``tensorboard/`` through
:class:`torch.utils.tensorboard.SummaryWriter` (needs the ``tensorboard`` package:
``pip install aswl[tensorboard]``). On resume each logger drops the epochs after the checkpoint.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

from aswl.checks import ConfigError
from aswl.io import WriteError, explain, write_text, write_with

LOGGER_NAMES = ("jsonl", "csv", "tensorboard")


def flatten(record: dict[str, Any]) -> dict[str, Any]:
    """Scalars as they are, nested dicts (attentions) as ``key/sub`` entries."""
    flat: dict[str, Any] = {}
    for key, value in record.items():
        if isinstance(value, dict):
            singular = key[:-1] if key.endswith("s") else key
            flat.update({f"{singular}/{sub}": v for sub, v in value.items()})
        else:
            flat[key] = value
    return flat


class JsonlLogger:
    def __init__(self, out_dir: Path, history: list[dict[str, Any]]) -> None:
        self.path = out_dir / "metrics.jsonl"
        # a resumed run keeps the epochs up to its checkpoint (atomic: never half a file)
        write_text(self.path, "".join(json.dumps(record) + "\n" for record in history))

    def log(self, record: dict[str, Any]) -> None:
        try:
            with open(self.path, "a") as file:  # one line appended per epoch
                file.write(json.dumps(record) + "\n")
        except OSError as err:
            raise WriteError(explain(err, self.path)) from err

    def close(self) -> None:
        pass


class CsvLogger:
    def __init__(self, out_dir: Path, history: list[dict[str, Any]]) -> None:
        self.path = out_dir / "metrics.csv"
        self.rows = [flatten(record) for record in history]
        self._write()

    def _write(self) -> None:
        columns: list[str] = []
        for row in self.rows:
            columns += [key for key in row if key not in columns]
        def fill(file: Any) -> None:
            writer = csv.DictWriter(file, fieldnames=columns)
            writer.writeheader()
            writer.writerows(self.rows)

        write_with(self.path, fill)  # atomic: a crash never leaves half a table

    def log(self, record: dict[str, Any]) -> None:
        self.rows.append(flatten(record))
        self._write()  # rewritten whole: a late column (val_accuracy) keeps the header right

    def close(self) -> None:
        pass


class TensorBoardLogger:
    def __init__(self, out_dir: Path, history: list[dict[str, Any]]) -> None:
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError as exc:
            raise ConfigError("log: tensorboard needs the tensorboard package; install it "
                              "with `pip install aswl[tensorboard]` or drop it from log") from exc
        folder = out_dir / "tensorboard"
        if not history:  # a new run: no events of an earlier one in the same folder
            shutil.rmtree(folder, ignore_errors=True)
        # purge_step: events after the checkpoint's epoch (from an interrupted run) are dropped
        self.writer = SummaryWriter(str(folder),
                                    purge_step=len(history) + 1 if history else None)

    def log(self, record: dict[str, Any]) -> None:
        epoch = int(record["epoch"])
        for key, value in flatten(record).items():
            if key != "epoch" and isinstance(value, (int, float)) and value is not None:
                self.writer.add_scalar(key, float(value), epoch)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


LOGGERS = {"jsonl": JsonlLogger, "csv": CsvLogger, "tensorboard": TensorBoardLogger}


def build_loggers(names: list[str], out_dir: Path,
                  history: list[dict[str, Any]]) -> list[Any]:
    """The loggers named in ``names``, started with the epochs already done (``history``)."""
    return [LOGGERS[name](out_dir, history) for name in dict.fromkeys(names)]
