"""Command line: thin commands over the library.

    aswl train [--config NAME|FILE.yaml] [--set key=value ...] [--out DIR] [--resume]
    aswl configs             the shipped configs (paper experiments) and their reference points
    aswl config [--config NAME] [--set ...]   the resolved config, one comment per key
    aswl eval DIR            accuracy and sparsity of a run's exported model.safetensors
    aswl report DIR          the run's per-layer table
    aswl compare --methods dense,aswl --sparsities 0.9,0.95 --seeds 3 --out DIR
                             a grid of runs (resumable) and its summary table and plots
    aswl export DIR|FILE --format compact|safetensors|onnx [--quantize ...] [--out FILE]
    aswl bench DIR|FILE [--batch 1,64] [--threads N]
    aswl methods | models | datasets
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
from pathlib import Path
from typing import Any

from aswl.cli_export import add_export_commands

log = logging.getLogger("aswl")


def _setup_logging(out_dir: Path | None, verbose: bool) -> None:
    from aswl.train.launch import LaunchError, read_launch

    level = logging.DEBUG if verbose else logging.INFO
    try:
        rank = read_launch().rank
    except LaunchError:  # `aswl train` refuses them; the other commands run as one process
        rank = 0
    handlers: list[logging.Handler] = [logging.StreamHandler(sys.stderr)]
    if out_dir is not None and rank == 0:
        out_dir.mkdir(parents=True, exist_ok=True)
        handlers.append(logging.FileHandler(out_dir / "train.log"))
    logging.basicConfig(level=level if rank == 0 else logging.WARNING, handlers=handlers,
                        format="%(asctime)s %(levelname)s %(message)s", datefmt="%H:%M:%S",
                        force=True)


def _version() -> str:
    from aswl import __version__

    return __version__


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the run is, so that it stops like Ctrl-C."""


def _raise_terminated(signum: int, frame: object) -> None:
    raise Terminated


def _stopped(out: Path, stop: KeyboardInterrupt) -> int:
    """Say what an interrupted run kept and how to continue; the exit status."""
    from aswl.train.checkpoint import read_checkpoint_header

    header = read_checkpoint_header(out / "checkpoints" / "last.pt") or {}
    how = f"Continue with: aswl train --out {out} --resume"
    if isinstance(header.get("epoch"), int):
        kept = f"the checkpoint of epoch {header['epoch']} is kept"
    elif (out / "config.yaml").is_file():
        kept = "no epoch had finished, so there is no checkpoint yet"
    else:
        kept = "its config.yaml was not written yet"
        how = "Start it again with the same command"
    what = "terminated (SIGTERM)" if isinstance(stop, Terminated) else "interrupted"
    log.error("%s; %s. %s", what, kept, how)
    return 143 if isinstance(stop, Terminated) else 130


def cmd_train(args: argparse.Namespace) -> int:
    from aswl.configs import resolve_config
    from aswl.runs import default_out, out_folder, prepare_run, run_directory, write_config
    from aswl.train import load_config, train
    from aswl.train.launch import read_launch

    args.out = None if args.out is None else out_folder(args.out)
    args.config = resolve_config(args.config)  # a shipped config by name, or a file
    if args.resume:  # the run's own config, --config and --set on top, checked
        from aswl.config import RESUMABLE_KEYS
        from aswl.runs import resume_config
        from aswl.train import load_checkpoint
        from aswl.train.provenance import check_belongs

        def checkpoint_config(path: Path) -> tuple[dict[str, Any], int]:
            state = load_checkpoint(path)
            saved = json.loads(state["config"])
            check_belongs(args.out, saved, RESUMABLE_KEYS)  # not a checkpoint of another run
            return saved, int(state["epoch"])

        config = resume_config(args.out, args.config, args.set or [], checkpoint_config)
    else:
        config = load_config(args.config, args.set or [])
    out = args.out or default_out(config)
    main_rank = read_launch().main  # checks the launcher's variables before anything runs
    _setup_logging(None, args.verbose)
    with run_directory(out, main=main_rank):  # one writer per folder, checked before training
        _setup_logging(out, args.verbose)
        # resume, refuse, or clear an earlier run's files
        args.resume = prepare_run(out, resume=args.resume, overwrite=args.overwrite,
                                  main=main_rank, config=config)
        previous = None
        if threading.current_thread() is threading.main_thread():
            previous = signal.signal(signal.SIGTERM, _raise_terminated)
        try:
            if main_rank:  # before the data and the model: an early stop can be resumed
                write_config(out, config)
            report = train(config, out, resume=args.resume)
        except KeyboardInterrupt as stop:
            return _stopped(out, stop)
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
    if main_rank:
        print(json.dumps({k: report[k] for k in ("method", "model", "dataset", "test_accuracy",
                                                 "global_sparsity", "train_seconds")}))
    return 0


def cmd_eval(args: argparse.Namespace) -> int:
    from aswl.export.compact import ExportError, load_compact, load_weights
    from aswl.runs import load_run
    from aswl.train.data_loop import evaluate
    from aswl.train.dist import Dist, resolve_device

    _setup_logging(None, args.verbose)
    config, data, model = load_run(args.run, args.set)
    device = resolve_device(config.device, Dist())
    path = args.run / ("model.sparse.safetensors" if args.compact else "model.safetensors")
    if args.compact:
        load_compact(model, path)
    else:
        if not path.is_file():
            raise ExportError(f"{path} not found: the run did not finish; resume it first")
        load_weights(model, path)  # checks the header, the shapes and the SHA-256
    accuracy = evaluate(model.to(device), data.test, config.batch_size, device, Dist(),
                        config.data.workers)
    print(json.dumps({"test_accuracy": accuracy, "file": str(path), "dataset": config.dataset,
                      "test_samples": len(data.test), "device": str(device)}))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from aswl.export import format_table
    from aswl.export.compact import ExportError

    path = args.run / "report.json"
    if not path.is_file():
        raise ExportError(f"{path} not found: the run did not finish; resume it first")
    fix = f"it is damaged or not written by aswl; delete it and run `aswl train --out {args.run} " \
          "--resume` to write it again"
    try:
        report = json.loads(path.read_bytes())
    except (OSError, ValueError, RecursionError) as err:  # bad JSON, not UTF-8, too deep
        raise ExportError(f"{path} cannot be read as JSON ({str(err)[:200]}); {fix}") from None
    if not isinstance(report, dict):
        raise ExportError(f"{path} holds a JSON {type(report).__name__}, not a report; {fix}")
    try:
        text = format_table(report["layers"]) + (
            f"\n\n{report['method']} / {report['model']} / {report['dataset']}: test accuracy "
            f"{100 * report['test_accuracy']:.2f}%, global sparsity "
            f"{100 * report['global_sparsity']:.2f}%, storage {report['dense_bytes']:,} -> "
            f"{report['sparse_bytes']:,} bytes, MFLOPs {report['flops_dense'] / 1e6:.3f} -> "
            f"{report['flops_sparse'] / 1e6:.3f}")
    except KeyError as err:
        raise ExportError(f"{path} lacks the entry {err}; {fix}") from err
    except (TypeError, ValueError, AttributeError) as err:
        raise ExportError(f"{path} has an entry of the wrong type ({err}); {fix}") from err
    print(text)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from aswl.compare import describe, format_summary, load_grid, run_grid, write_outputs
    from aswl.runs import out_folder
    from aswl.train import load_config

    _setup_logging(None, args.verbose)
    args.out = out_folder(args.out)
    args.out.mkdir(parents=True, exist_ok=True)
    handler = logging.FileHandler(args.out / "compare.log")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s",
                                           datefmt="%H:%M:%S"))
    logging.getLogger().addHandler(handler)
    try:
        from aswl.configs import resolve_config

        base = load_config(resolve_config(args.config), args.set or [])
        grid = load_grid(args.grid, methods=args.methods, sparsities=args.sparsities,
                         seeds=args.seeds, layer_plot_sparsity=args.layer_plot_sparsity,
                         variants=args.variants)
        try:
            rows = run_grid(base, grid, args.out, train_missing=not args.report_only)
        except KeyboardInterrupt:
            log.error("interrupted; finished runs and checkpoints are kept. Rerun the same "
                      "command to continue")
            return 130
        summary = write_outputs(rows, args.out, grid, describe(base))
    finally:
        logging.getLogger().removeHandler(handler)
        handler.close()
    print(format_summary(summary))
    failed = sum(row["status"] != "ok" for row in rows)
    print(f"\n{len(rows)} runs, {failed} not ok; wrote {args.out}/summary.md, results.csv, "
          "accuracy_vs_sparsity.png, layer_sparsity.png")
    return 1 if failed else 0


def cmd_list(args: argparse.Namespace) -> int:
    if args.command == "methods":
        import dataclasses
        import textwrap

        from aswl.methods import get_method, list_methods

        names = []
        for name in list_methods():
            options = [item.name for item in dataclasses.fields(get_method(name).config_class)]
            names.append(name + "\n" + textwrap.fill(
                "options: " + ", ".join(options), width=96, initial_indent="  ",
                subsequent_indent="    "))
        names.append("(`aswl config --set method.name=NAME` shows each option with its doc)")
    elif args.command == "models":
        from aswl.models import list_models

        names = list_models()
    else:
        from aswl.data import list_datasets

        names = list_datasets()
    print("\n".join(names))
    return 0


def cmd_config(args: argparse.Namespace) -> int:
    from aswl.configs import describe_config, resolve_config
    from aswl.train import load_config

    print(describe_config(load_config(resolve_config(args.config), args.set or [])))
    return 0


def cmd_configs(args: argparse.Namespace) -> int:
    import textwrap

    from aswl.configs import list_configs

    for item in list_configs():
        print(item.name)
        for text in (item.title, f"reference: {item.reference or 'none'}"):
            print(textwrap.fill(text, 96, initial_indent="    ", subsequent_indent="      "))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="aswl", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train one model (default: the embedded MNIST job)",
                           epilog="Every config key, its value and a one-line doc: "
                           "`aswl config [--config NAME] [--set ...]`. Shipped configs: "
                           "`aswl configs`.")
    train.add_argument("--config", help="a shipped config name (see `aswl configs`) or a "
                       "YAML file")
    train.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE",
                       help="override config keys, e.g. --set epochs=5 method.alpha=2")
    train.add_argument("--out", help="output folder (default runs/<name>)")
    train.add_argument("--resume", action="store_true", help="continue from --out's checkpoint")
    train.add_argument("--overwrite", action="store_true",
                       help="replace a previous run in --out instead of refusing")
    train.set_defaults(func=cmd_train)
    evaluate = sub.add_parser("eval", help="test accuracy of a finished run's exported model")
    evaluate.add_argument("run", type=Path)
    evaluate.add_argument("--compact", action="store_true",
                          help="load model.sparse.safetensors instead of model.safetensors")
    evaluate.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE",
                          help="score on other data or another device: dataset=..., "
                          "data.root=..., data.limit_test=..., device=..., batch_size=...")
    evaluate.set_defaults(func=cmd_eval)
    report = sub.add_parser("report", help="print a finished run's per-layer table")
    report.add_argument("run", type=Path)
    report.set_defaults(func=cmd_report)
    compare = sub.add_parser("compare", help="train a grid of methods x sparsities x seeds "
                             "on one base config and summarise it (resumable)")
    compare.add_argument("--config", help="base config shared by every run: a shipped name "
                         "or a YAML file")
    compare.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE",
                         help="override base config keys, e.g. --set epochs=5 model=resnet20")
    compare.add_argument("--grid", type=Path,
                         help="YAML with methods, sparsities, seeds (the flags override it)")
    compare.add_argument("--methods", help="comma list, e.g. dense,aswl,gmp,rigl")
    compare.add_argument("--variants", nargs="+", action="extend", metavar="NAME:KEY=VALUE",
                         help="methods with options of their own, NAME:KEY=VALUE[+KEY=VALUE...] "
                         "(space-separated), e.g. 'aswl:prior=uniform'; each gets rows of its "
                         "own")
    compare.add_argument("--sparsities", help="comma list of targets, e.g. 0.9,0.95,0.98")
    compare.add_argument("--seeds", help="a count (3: seeds 0,1,2) or a comma list (default 3)")
    compare.add_argument("--out", required=True, help="output folder")
    compare.add_argument("--layer-plot-sparsity", type=float,
                         help="target of layer_sparsity.png (default: the middle one)")
    compare.add_argument("--report-only", action="store_true",
                         help="train nothing: tables and plots of the runs finished so far")
    compare.set_defaults(func=cmd_compare)
    add_export_commands(sub)
    sub.add_parser("configs", help="list the shipped configs with their reference points"
                   ).set_defaults(func=cmd_configs)
    show = sub.add_parser("config", help="print the resolved config, one comment per key")
    show.add_argument("--config", help="a shipped config name or a YAML file")
    show.add_argument("--set", nargs="+", action="extend", metavar="KEY=VALUE")
    show.set_defaults(func=cmd_config)
    for name in ("methods", "models", "datasets"):
        sub.add_parser(name, help=f"list the registered {name}").set_defaults(func=cmd_list)
    return parser


def _exit_interrupted(signum: int, frame: object) -> None:
    """Ctrl-C while the libraries load: nothing has started, so leave at once. (A
    KeyboardInterrupt raised inside torch's import can be swallowed by a destructor.)"""
    os.write(2, b"interrupted\n")
    os._exit(130)


def main(argv: list[str] | None = None) -> int:
    """The ``aswl`` command; returns the exit status."""
    try:
        return _run(argv)
    except KeyboardInterrupt:  # Ctrl-C before any run started (after the imports)
        print("interrupted", file=sys.stderr)
        return 130


def _run(argv: list[str] | None) -> int:
    args = build_parser().parse_args(argv)
    quick_exit = threading.current_thread() is threading.main_thread() and \
        signal.getsignal(signal.SIGINT) is signal.default_int_handler
    if quick_exit:
        signal.signal(signal.SIGINT, _exit_interrupted)
    try:
        from aswl.data import DatasetError
        from aswl.export.compact import ExportError
        from aswl.finite import NonFiniteError
        from aswl.io import WriteError
        from aswl.methods import ConfigError
        from aswl.models import ModelError
        from aswl.runs import RunDirError
        from aswl.train import CheckpointError, TrainingError
        from aswl.train.launch import LaunchError
    finally:
        if quick_exit:
            signal.signal(signal.SIGINT, signal.default_int_handler)

    try:
        return args.func(args)
    except (ConfigError, DatasetError, ModelError, TrainingError, CheckpointError,
            ExportError, RunDirError, LaunchError, NonFiniteError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (OSError, WriteError) as err:  # a full disk or a vanished folder while writing
        from aswl.io import failure_line

        print(f"error: {failure_line(err, args.command)}", file=sys.stderr)
        return 2
