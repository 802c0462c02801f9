"""What the commands check and build before any training: the recipes of their runs, the
dataset, the writable outputs and stores, the worker processes."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.options import resolve_device


def how_from(args: argparse.Namespace) -> dict[str, Any]:
    """How to run, from the flags: device, precision (None: a suite's own, else auto), compile,
    graphs."""
    return {
        "device": args.device,
        "precision": args.precision,
        "compile": args.compile,
        "graphs": args.graphs,
    }


def recipe_from(args: argparse.Namespace, approach: str, dataset: Any, overrides: dict, **how):
    """The recipe of ``approach`` from the command line: its overrides and how to run (``how``
    replaces the flags' device, precision, compile, graphs); checked before any work."""
    from bench.spec import Recipe

    how = {k: v for k, v in {**how_from(args), **how}.items() if v is not None}
    return Recipe.of(approach, dataset, overrides, args.data_dir, **how)


def load_dataset(*args: Any, **kwargs: Any) -> Any:
    """:func:`bench.data.load_dataset`, imported when a command loads data."""
    from bench.data import load_dataset

    return load_dataset(*args, **kwargs)


def preflight(
    out_file: Path | None = None,
    out_folder: Path | None = None,
    storage: str | None = None,
    tracking: bool = True,
) -> None:
    """What a command will write, checked before it trains: its output, the cache, the MLflow
    store (``tracking``) and the Optuna ``storage``."""
    from bench import preflight as check

    if out_file is not None:
        check.writable_file(out_file, "--out")
    if out_folder is not None:
        check.writable_folder(out_folder, "--out")
    check.writable_cache()
    if tracking:
        check.reachable_tracking()
    if storage is not None:
        check.reachable_storage(storage)


def workers_from(
    args: argparse.Namespace, probes: Callable[[], list[tuple[Any, Any]]]
) -> tuple[int, list[str]]:
    """``--workers``: a count (spread over the visible GPUs on CUDA), or ``auto``: measured on
    CUDA from free memory and the peak of a few training steps of each (spec, dataset) of
    ``probes``; one process on CPU."""
    from bench.orchestration import auto_workers, visible_gpus

    cuda = resolve_device(args.device) == "cuda"
    if args.workers != "auto":
        return args.workers, visible_gpus() if cuda else []
    if not cuda:
        return auto_workers(None)
    from bench.perf import step_memory_mb

    return auto_workers(max(step_memory_mb(spec, dataset) for spec, dataset in probes()))
