"""The options several commands share, each group defined once, and what the commands read back
from them: run options, hyperparameter overrides, approach names, worker counts."""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from bench.options import DEVICES, GRAPHS, PRECISIONS

APPROACH_HELP = "an approach name (`python -m bench list` shows them)"
STORAGE_DEFAULT = "(default: $BENCH_OPTUNA_STORAGE, else sqlite:///optuna.db)"
STORAGE_HELP = f"Optuna storage {STORAGE_DEFAULT}"
APPROACH_FOLDER = Path(__file__).resolve().parents[1] / "approaches"
# the approaches' helper modules; every other module there is one approach
HELPER_MODULES = {"__init__", "layers", "recipes", "registry", "spaces"}


def add_approach_option(p: argparse.ArgumentParser, many: bool = False) -> None:
    """``--approach``: one name (required), or with ``many`` several (default: all)."""
    if many:
        p.add_argument("--approach", nargs="+", help="approaches (default: all; `list` shows them)")
    else:
        p.add_argument("--approach", required=True, help=APPROACH_HELP)


def add_training_options(p: argparse.ArgumentParser, set_help: str) -> None:
    """Options shared by train, compare, ablate, tune and perf: data, hyperparameters, device,
    progress."""
    p.add_argument(
        "--dataset",
        default="captcha-v2",
        help="captcha-v2 (default), synthetic:PRESET[,key=value...] or folder:PATH",
    )
    add_override_options(p, set_help)
    add_data_options(p)
    add_run_options(p)
    add_quiet_option(p, "no progress bars")


def add_override_options(p: argparse.ArgumentParser, set_help: str) -> None:
    """``--epochs``, ``--budget`` and ``--set``: the hyperparameters changed from the
    approach's own (read back by :func:`overrides_from`)."""
    p.add_argument("--epochs", type=int, help="override the approach's epochs")
    p.add_argument(
        "--budget",
        metavar="DURATION",
        help="train for this long instead (e.g. 8m, 90s; the epochs become a cap and the "
        "schedule runs on the share of the budget used)",
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)


def add_data_options(p: argparse.ArgumentParser, split_seed: bool = True) -> None:
    """Where the datasets are and (with ``split_seed``) how they are split."""
    if split_seed:
        p.add_argument(
            "--split-seed", type=int, default=0, help="train/val/test split seed (default 0)"
        )
    p.add_argument(
        "--data-dir", type=Path, help="folder holding datasets (else $BENCH_DATA_DIR, the cache)"
    )


def add_run_options(p: argparse.ArgumentParser) -> None:
    """Device, precision, compilation and CUDA graphs: part of every run's spec."""
    p.add_argument(
        "--device", default="auto", choices=DEVICES, help="training device (auto: CUDA if any)"
    )
    p.add_argument(
        "--precision",
        choices=PRECISIONS,
        help="autocast precision (default auto: bf16 on CUDA, fp32 on CPU; `run`: the suite's)",
    )
    p.add_argument(
        "--compile",
        action="store_true",
        default=os.environ.get("BENCH_COMPILE", "") not in ("", "0"),
        help="torch.compile the model for training steps (default: $BENCH_COMPILE)",
    )
    p.add_argument(
        "--graphs",
        default="auto",
        choices=GRAPHS,
        help="capture the training step as CUDA graphs (default auto: on CUDA where the run "
        "allows; the CPU path never captures)",
    )


def add_quiet_option(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--quiet", action="store_true", help=help)


def add_tracking_options(p: argparse.ArgumentParser, suite_help: str) -> None:
    """The MLflow experiment (default: the dataset's name) and the runs' suite tag."""
    add_experiment_option(p)
    p.add_argument("--suite", default="", help=suite_help)


def add_experiment_option(p: argparse.ArgumentParser) -> None:
    p.add_argument("--experiment", help="MLflow experiment (default: the dataset's name)")


def add_storage_option(p: argparse.ArgumentParser, help: str = STORAGE_HELP) -> None:
    """``--storage``: the Optuna storage (read with :func:`bench.orchestration.storage_url`)."""
    p.add_argument("--storage", help=help)


def add_workers_option(p: argparse.ArgumentParser, help: str, default: int | None = None) -> None:
    """``--workers``: a count of processes or ``auto`` (read with :func:`workers_from`)."""
    p.add_argument("--workers", type=workers_arg, default=default, help=help)


def add_section_options(p: argparse.ArgumentParser) -> None:
    """``--ablations DIR``, ``--curves DIR`` and ``--robustness DIR``: the report's sections read
    from folders (none without them)."""
    p.add_argument(
        "--ablations",
        type=Path,
        help="folder of `ablate` outputs (e.g. reports/ablations) for a 'What matters' section "
        "in the report (default: none)",
    )
    p.add_argument(
        "--curves",
        type=Path,
        help="folder of a `curve` (its curve.csv) for a 'Data efficiency' section in the report "
        "(default: none)",
    )
    p.add_argument(
        "--robustness",
        type=Path,
        help="folder of a `robustness` (its robustness.csv) for a 'Robustness' section in the "
        "report (default: none)",
    )


def add_serve_options(p: argparse.ArgumentParser, port: int) -> None:
    """Where a served UI listens."""
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=port)


def workers_arg(value: str) -> int | str:
    from bench.orchestration import parse_workers

    try:
        return parse_workers(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are read as YAML (numbers, booleans, lists, null)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def overrides_from(args: argparse.Namespace, *approaches: str) -> dict[str, Any]:
    """``--set``, ``--epochs`` and ``--budget``, checked against each approach before any data
    work."""
    from bench.spec import resolve_hparams

    overrides = parse_assignments(args.set)
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.budget is not None:
        from bench.hparams import positive_duration

        positive_duration(args.budget, "--budget")
        overrides["budget"] = args.budget
    for name in approaches:
        resolve_hparams(name, overrides)
    return overrides


def approach_names() -> list[str]:
    """The shipped approaches' names, read from their file names (``ce_crnn.py``: ``ce-crnn``)
    without importing them (and torch): an unknown ``--approach`` is refused at once."""
    files = APPROACH_FOLDER.glob("*.py")
    return sorted(p.stem.replace("_", "-") for p in files if p.stem not in HELPER_MODULES)


def check_approach_names(names: list[str]) -> None:
    known = approach_names()
    if unknown := [name for name in names if name not in known]:
        raise KeyError(f"unknown approach {unknown[0]!r}; known: {', '.join(known)}")


def approaches_from(args: argparse.Namespace) -> list[str]:
    """``--approach NAME ...``, every registered approach when not given."""
    from bench.approaches import list_approaches

    return args.approach or list_approaches()


def data_dir_of(args: argparse.Namespace) -> str | None:
    """``--data-dir`` as the string the workers and plans take, ``None`` when not given."""
    return str(args.data_dir) if args.data_dir else None


def add_command(
    sub: argparse._SubParsersAction, name: str, func: Callable[..., Any], help: str
) -> argparse.ArgumentParser:
    """A command's subparser: ``help`` its line in ``python -m bench --help``; the docstring of
    ``func`` (which ``main`` runs with the parsed arguments) its description, so plain text
    (argparse joins its lines)."""
    p = sub.add_parser(name, help=help, description=func.__doc__)
    p.set_defaults(func=func)
    return p
