"""Command line: ``python -m bench list | train | compare | tune | run | perf | predict | report |
cache``."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import yaml

from bench.allocator import keep_freed_memory
from bench.config import cache_dir
from bench.errors import DataError, LabelError, NonFiniteLossError, ReportError, first_line
from bench.options import (
    DEVICES,
    GRAPHS,
    PRECISIONS,
    RUN_OPTION_KEYS,
    RunOptions,
    resolve_device,
)

# torch, timm, MLflow and the rest are imported by the commands that use them: `--help` and
# argument errors answer without them

APPROACH_HELP = "an approach name (`python -m bench list` shows them)"

# errors caused by what the user asked for: printed as one line, not a traceback
USER_ERRORS = (DataError, LabelError, KeyError, ValueError, NonFiniteLossError, ReportError)


def parse_assignments(items: list[str]) -> dict[str, Any]:
    """``key=value`` pairs; values are read as YAML (numbers, booleans, lists, null)."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ValueError(f"--set expects key=value, got {item!r}")
        out[key.strip()] = yaml.safe_load(value)
    return out


def cmd_list(args: argparse.Namespace) -> None:
    import shutil
    import textwrap

    import torch

    from bench.approaches import get_approach, list_approaches
    from bench.approaches.registry import create_model
    from bench.data.sources import CAPTCHA_V2_CHARSET
    from bench.hparams import TrainConfig

    rows = []
    for name in list_approaches():
        approach = get_approach(name)
        c, h, w = approach.input_shape
        classes = len(
            TrainConfig.from_hparams(approach.defaults).output_charset(CAPTCHA_V2_CHARSET)
        )
        with torch.device("meta"):  # shapes only: counting needs no memory and no init
            model, _ = create_model(name, num_classes=classes + 1, max_len=5)
        params = sum(p.numel() for p in model.parameters())
        rows.append((name, approach.source, approach.codec, f"{c}x{h}x{w}", f"{params / 1e6:.1f}M"))
        rows.append(approach.summary)
    header = ("approach", "source", "loss", "input", "params")
    table = [r for r in rows if isinstance(r, tuple)]
    widths = [max(len(r[i]) for r in [header, *table]) for i in range(len(header))]
    width = min(100, shutil.get_terminal_size((100, 24)).columns)
    print("  ".join(v.ljust(wd) for v, wd in zip(header, widths, strict=True)).rstrip())
    for row in rows:
        if isinstance(row, tuple):
            print("  ".join(v.ljust(wd) for v, wd in zip(row, widths, strict=True)).rstrip())
        else:
            print(textwrap.fill(row, width, initial_indent="    ", subsequent_indent="    "))
    legend = (
        "source: the write-up it reproduces; loss: ce (a class per character position) or ctc "
        "(a class per image column, aligned by CTC); input: channels x height x width; params: "
        "for captcha-v2"
    )
    print(textwrap.fill(legend, width))


def spec_from(
    args: argparse.Namespace,
    approach: str,
    dataset: Any,
    overrides: dict,
    seed: int,
    options: RunOptions | None = None,
    fold: int = 0,
):
    """The run's spec from the command line (checked before any training or MLflow run)."""
    from bench.spec import make_spec

    return make_spec(
        approach, dataset, overrides, seed=seed, options=options or run_options(args), fold=fold
    )


def cmd_train(args: argparse.Namespace) -> None:
    overrides = overrides_from(args, args.approach)
    dataset = load_dataset(
        args.dataset, data_dir=args.data_dir, split_seed=args.split_seed, skip_bad=args.skip_bad
    )
    spec = spec_from(args, args.approach, dataset, overrides, args.seed, fold=args.fold)
    preflight(out_file=args.out)
    from bench.tracked import train_tracked
    from bench.train import EpochLines

    result, run_id = train_tracked(
        spec,
        dataset,
        experiment=args.experiment,
        tags={"suite": args.suite},
        callbacks=(EpochLines(spec),),
        checkpoint_dir=None if args.no_resume else cache_dir() / "checkpoints",
        log_model=not args.no_model,
        progress=not args.quiet,
    )
    cfg = spec.cfg
    for name, reason in dataset.store(*cfg.image_size).skipped:
        print(f"skipped {name}: {reason}", file=sys.stderr)
    summary = {**result.summary(), "mlflow_run": run_id}
    width = max(map(len, summary))
    for key, value in summary.items():
        percent = key.startswith("test_") and key != "test_loss"
        shown = f"{value:.2%}" if isinstance(value, float) and percent else value
        print(f"{key.ljust(width)}  {shown}")
    if args.out:
        from bench.results import save_result

        save_result(result, args.out)


def folds_of(hparams: dict[str, Any]) -> range:
    """Every fold of a k-fold split (``split=kfold``), else the one split."""
    return range(hparams["folds"]) if hparams["split"] == "kfold" else range(1)


def cmd_compare(args: argparse.Namespace) -> None:
    from bench.approaches import get_approach
    from bench.results import train_and_record, write_table

    approaches = approaches_from(args)
    overrides = overrides_from(args, *approaches)
    dataset = load_dataset(args.dataset, data_dir=args.data_dir, split_seed=args.split_seed)
    specs = [
        spec_from(args, name, dataset, overrides, seed, fold=fold)
        for name in approaches
        for seed in args.seeds
        for fold in folds_of(get_approach(name).resolve(overrides))
    ]
    preflight(out_folder=args.out)
    for spec in specs:
        train_and_record(
            spec,
            dataset,
            args.out,
            experiment=args.experiment,
            suite=args.suite,
            progress=not args.quiet,
        )
    print(write_table(args.out).to_string(index=False))
    if args.report:
        from bench.report import build_report

        experiment = args.experiment or dataset.name
        out = build_report(
            args.out / "index.html", experiments=[experiment], suite=args.suite or None
        )
        print(f"report written to {out}")


def parse_variation(text: str) -> tuple[str, list[Any]]:
    """``KEY=V1,V2[,...]``: the values read as YAML, at least two."""
    key, sep, values = text.partition("=")
    parsed = [yaml.safe_load(v) for v in values.split(",") if v.strip()]
    if not sep or not key or len(parsed) < 2:
        raise ValueError(f"--vary expects KEY=V1,V2[,...] (two values at least), got {text!r}")
    return key.strip(), parsed


def cmd_ablate(args: argparse.Namespace) -> None:
    from bench.ablate import run_ablation

    key, values = parse_variation(args.vary)
    base = overrides_from(args, args.approach)
    dataset = load_dataset(args.dataset, data_dir=args.data_dir, split_seed=args.split_seed)

    def variant(value: Any, seed: int):
        if key in RUN_OPTION_KEYS:  # how to run (precision, graphs, ...), not a hyperparameter
            options = replace(run_options(args), **{key: value})
            return spec_from(args, args.approach, dataset, base, seed, options)
        return spec_from(args, args.approach, dataset, {**base, key: value}, seed)

    specs = [(value, variant(value, seed)) for value in values for seed in args.seeds]
    out = args.out or Path("reports/ablations") / f"{args.approach}-{key}"
    preflight(out_folder=out)
    table = run_ablation(
        specs, dataset, key, out, experiment=args.experiment, progress=not args.quiet
    )
    print((out / "ablation.md").read_text(), end="")
    print(f"{len(table)} variants; table in {out / 'ablation.csv'}")


def cmd_report(args: argparse.Namespace) -> None:
    from bench.preflight import writable_file
    from bench.report import build_report

    writable_file(args.out, "--out")
    out = build_report(
        args.out,
        experiments=args.experiment,
        suite=args.suite,
        optuna_storage=args.storage,
        ablations=args.ablations,
    )
    print(f"report written to {out}")


def cmd_predict(args: argparse.Namespace) -> None:
    from bench.recognizer import load_recognizer, read_images

    for path in args.images:  # before loading the model
        if not path.is_file():
            raise DataError(f"{path}: no such file")
    model, meta = load_recognizer(args.model)
    for path, text in zip(args.images, read_images(model, meta, args.images), strict=True):
        print(f"{path}\t{text}")


def cmd_tune(args: argparse.Namespace) -> None:
    from bench.study import storage_url
    from bench.tune import TuneConfig, study_report, tune

    overrides = overrides_from(args, args.approach)
    resolve_device(args.device)  # no CUDA: an error before any trial
    preflight(storage=storage_url(args.storage))
    dataset = load_dataset(args.dataset, data_dir=args.data_dir)  # missing: stop before any trial
    cfg = TuneConfig(
        approach=args.approach,
        dataset=args.dataset,
        trials=args.trials,
        storage=storage_url(args.storage),
        study=args.study or "",
        suite=args.suite,
        timeout=args.timeout,
        pruner=args.pruner,
        sampler=args.sampler,
        overrides=overrides,
        seed=args.seed,
        run=run_options(args),
        data_dir=str(args.data_dir) if args.data_dir else None,
        split_seed=args.split_seed,
        experiment=args.experiment,
        progress=not args.quiet,
    )
    workers, gpus = workers_from(
        args, lambda: [(spec_from(args, args.approach, dataset, overrides, args.seed), dataset)]
    )
    report = study_report(tune(cfg, workers, gpus))
    for key, value in report.items():
        shown = f"{value:.2%}" if key.startswith("best_val_") and value is not None else value
        print(f"{key:16}  {shown}")


def cmd_run(args: argparse.Namespace) -> int:
    from bench.hparams import format_duration
    from bench.report import build_report
    from bench.study import storage_url
    from bench.suite import default_suites, load_suite, run_suite, summary_table

    suites = [load_suite(name) for name in args.suite or default_suites()]
    resolve_device(args.device)  # no CUDA: an error before any work
    storage = storage_url(args.storage)
    out = args.out or Path("reports") / suites[0].name / "index.html"
    if not args.plan:  # the plan creates nothing; a run checks everything it will write first
        preflight(out_file=out, storage=storage)
    plans = [plan_run(args, suite) for suite in suites]
    if len(plans) > 1:
        total = sum(plan.wall_s for plan, _, _ in plans)
        print(f"estimated wall time of the {len(plans)} suites: {format_duration(total)}")
    if args.plan:
        return 0
    failures = []
    for suite, (plan, workers, gpus) in zip(suites, plans, strict=True):
        outcome = run_suite(
            suite,
            storage,
            data_dir=str(args.data_dir) if args.data_dir else None,
            quiet=args.quiet,
            workers=workers,
            gpus=gpus,
            run=suite_options(args, suite),
            tags={"plan_estimate_s": round(plan.wall_s)},
        )
        failures += outcome.failures
    try:
        build_report(
            out,
            experiments=list(dict.fromkeys(suite.experiment for suite in suites)),
            suite=suites[0].name if len(suites) == 1 else None,
            optuna_storage=storage,
            ablations=args.ablations,
        )
        for suite in suites:
            print(f"suite {suite.name}:\n{summary_table(suite).to_string(index=False)}")
        print(SUMMARY_LEGEND)
        print(f"report written to {out}")
    except ReportError as err:
        failures.append(f"report: {err}")
    print(where_things_are(suites[0].experiment, storage))
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if failures else 0


SUMMARY_LEGEND = (
    "n: final runs (seeds x folds); seq_acc, char_acc, cer: pooled over their test images, "
    "(low-high) a 95% interval (runs, then images resampled); params: model parameters; "
    "train_s: mean training seconds per run (validation excluded)"
)


def where_things_are(experiment: str, storage: str) -> str:
    """Where a suite's runs and studies are, and the commands that open them."""
    from bench.tracking import tracking_uri, training_view

    return (
        f"runs:    MLflow {tracking_uri()}; `make ui` serves it, then open "
        f"{training_view(experiment)}\nstudies: Optuna {storage}; `make dashboard` serves it"
    )


def suite_options(args: argparse.Namespace, suite: Any) -> RunOptions:
    """How a suite's runs train: the command line's options, the suite's precision unless
    ``--precision`` says otherwise."""
    return replace(run_options(args), precision=args.precision or suite.precision)


def plan_run(args: argparse.Namespace, suite: Any) -> tuple[Any, int, list[str]]:
    """A suite's workers (``--workers``, else the suite's) and its plan, printed."""
    from bench.suite.plan import plan_suite

    print(f"suite {suite.name} ({suite.path}): {suite.description}", flush=True)
    options = suite_options(args, suite)

    def probes() -> list[tuple[Any, Any]]:
        pairs = []
        for name, approach in suite.pairs:
            dataset = load_dataset(name, data_dir=args.data_dir, split_seed=suite.split_seed)
            overrides = suite.final_overrides({})
            pairs.append((spec_from(args, approach, dataset, overrides, 0, options), dataset))
        return pairs

    asked = args.workers if args.workers is not None else suite.workers
    workers, gpus = workers_from(argparse.Namespace(workers=asked, device=args.device), probes)
    data_dir = str(args.data_dir) if args.data_dir else None
    plan = plan_suite(suite, options, workers, data_dir=data_dir)
    print("\n".join(plan.lines()), flush=True)
    return plan, workers, gpus


def workers_from(
    args: argparse.Namespace, probes: Callable[[], list[tuple[Any, Any]]]
) -> tuple[int, list[str]]:
    """``--workers``: a count (spread over the visible GPUs on CUDA), or ``auto``: measured on
    CUDA from free memory and the peak of a few training steps of each (spec, dataset) of
    ``probes``; one process on CPU."""
    from bench.study import auto_workers, visible_gpus

    cuda = resolve_device(args.device) == "cuda"
    if args.workers != "auto":
        return args.workers, visible_gpus() if cuda else []
    if not cuda:
        return auto_workers(None)
    from bench.perf import step_memory_mb

    return auto_workers(max(step_memory_mb(spec, dataset) for spec, dataset in probes()))


def cmd_perf(args: argparse.Namespace) -> None:
    from bench.perf import check_output, perf, write

    if args.out:
        check_output(args.out)  # before any measuring
    preflight(tracking=args.mlflow)
    approaches = approaches_from(args)
    overrides = overrides_from(args, *approaches)
    if args.batch_size:
        overrides["batch_size"] = args.batch_size
    dataset = load_dataset(args.dataset, data_dir=args.data_dir, split_seed=args.split_seed)
    specs = [spec_from(args, name, dataset, overrides, 0) for name in approaches]
    concurrency = args.concurrency
    if concurrency is None:  # the many-trials-per-GPU sweep; a CPU training uses every core
        concurrency = [1, 2, 4, 8] if specs[0].device == "cuda" else []
    frame = perf(
        specs,
        dataset,
        args.steps,
        args.loader_workers,
        concurrency=tuple(concurrency),
        data_dir=str(args.data_dir) if args.data_dir else None,
    )
    shown = frame.drop(columns=["flops_per_image"]).round(3)
    print(shown.to_string(index=False))
    if args.out:
        write(frame, args.out)
        print(f"written to {args.out}")
    if args.mlflow:
        import mlflow

        from bench.tracking import environment, use_experiment

        use_experiment("perf")
        with mlflow.start_run(run_name=f"perf {args.device} {dataset.name}"):
            mlflow.log_params({**environment(), "dataset": dataset.name, "steps": args.steps})
            for row in frame.to_dict("records"):
                mlflow.log_metrics(
                    {
                        f"{row['approach']}.{k}": float(v)
                        for k, v in row.items()
                        if isinstance(v, int | float)
                    }
                )
            mlflow.log_text(frame.to_csv(index=False), "perf.csv")


def cmd_ui(args: argparse.Namespace) -> None:
    """Print the link to the training view, then serve the local store with ``mlflow ui``."""
    from bench.tracking import latest_experiment, tracking_uri, training_view

    uri = tracking_uri()
    served = uri.startswith(("http://", "https://"))
    base = None if served else f"http://{args.host}:{args.port}"
    experiment = args.experiment or latest_experiment()
    print(f"MLflow UI of {uri}, training view: {training_view(experiment, base)}", flush=True)
    if served or args.no_serve:
        return
    command = [sys.executable, "-m", "mlflow", "ui", "--backend-store-uri", uri]
    os.execv(sys.executable, [*command, "--host", args.host, "--port", str(args.port)])


def cmd_dashboard(args: argparse.Namespace) -> None:
    """Serve the Optuna storage with optuna-dashboard."""
    from bench.study import storage_url

    storage = storage_url(args.storage)
    print(f"Optuna dashboard of {storage}: http://{args.host}:{args.port}/", flush=True)
    command = [sys.executable, "-m", "optuna_dashboard", storage]
    os.execv(sys.executable, [*command, "--host", args.host, "--port", str(args.port)])


def cmd_cache(args: argparse.Namespace) -> None:
    from bench import cache

    root = cache_dir()
    if args.action == "prune":
        removed, freed = cache.prune(everything=args.all)
        print(f"removed {removed} entries ({cache.human(freed)}) from {root}")
    found = cache.entries()
    print(f"{root}:")
    for kind, count, size, stale in cache.summary(found):
        note = f", {stale} stale (`cache prune` removes them)" if stale else ""
        print(f"  {kind:12} {count:4} entries  {cache.human(size):>10}{note}")
    print(f"  {'total':12} {len(found):4} entries  {cache.human(sum(e.bytes for e in found)):>10}")


def add_training_options(p: argparse.ArgumentParser, set_help: str) -> None:
    """Options shared by train, compare and tune: data, hyperparameters, device, output."""
    p.add_argument(
        "--dataset",
        default="captcha-v2",
        help="captcha-v2 (default), synthetic:PRESET[,key=value...] or folder:PATH",
    )
    p.add_argument("--epochs", type=int, help="override the approach's epochs")
    p.add_argument(
        "--budget",
        metavar="DURATION",
        help="train for this long instead (e.g. 8m, 90s; the epochs become a cap and the "
        "schedule runs on the share of the budget used)",
    )
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=set_help)
    p.add_argument(
        "--split-seed", type=int, default=0, help="train/val/test split seed (default 0)"
    )
    p.add_argument(
        "--data-dir", type=Path, help="folder holding datasets (else $BENCH_DATA_DIR, the cache)"
    )
    add_run_options(p)
    p.add_argument("--quiet", action="store_true", help="no progress bars")


def run_options(args: argparse.Namespace) -> RunOptions:
    return RunOptions(args.device, args.precision or "auto", args.compile, args.graphs)


def workers_arg(value: str) -> int | str:
    from bench.study import parse_workers

    try:
        return parse_workers(value)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


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


def load_dataset(*args: Any, **kwargs: Any) -> Any:
    """:func:`bench.data.load_dataset`, imported when a command loads data."""
    from bench.data import load_dataset

    return load_dataset(*args, **kwargs)


APPROACH_FOLDER = Path(__file__).resolve().parent / "approaches"
HELPER_MODULES = {"__init__", "layers", "recipes", "registry", "spaces"}  # the rest: one approach each


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


def overrides_from(args: argparse.Namespace, *approaches: str) -> dict[str, Any]:
    """``--set``, ``--epochs`` and ``--budget``, checked against each approach before any data
    work."""
    from bench.approaches import get_approach

    overrides = parse_assignments(args.set)
    if args.epochs is not None:
        overrides["epochs"] = args.epochs
    if args.budget is not None:
        from bench.preflight import positive_duration

        positive_duration(args.budget, "--budget")
        overrides["budget"] = args.budget
    for name in approaches:
        get_approach(name).resolve(overrides)
    return overrides


class DefaultsFormatter(argparse.HelpFormatter):
    """Shows an option's default unless its help already says it or there is none to show."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if (
            not action.option_strings
            or "default" in text
            or action.default in (None, False, "", [], argparse.SUPPRESS)
        ):
            return action.help
        return f"{text} (default: %(default)s)".lstrip()


class CommandParser(argparse.ArgumentParser):
    """A command's parser: its ``--help`` shows the options' defaults."""

    def __init__(self, *args: Any, **kwargs: Any):
        kwargs.setdefault("formatter_class", DefaultsFormatter)
        super().__init__(*args, **kwargs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description="captcha-bench: compare text-recognition architectures on captcha images.",
    )
    parser.add_argument(
        "--verbose",
        action="store_true",
        help="also show MLflow's and Optuna's own INFO lines (before the command: "
        "python -m bench --verbose run ...)",
    )
    sub = parser.add_subparsers(dest="command", required=True, parser_class=CommandParser)

    p = sub.add_parser("list", help="list the registered approaches")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser(
        "train",
        help="train one approach and print its test metrics",
        description="Train one approach with its source's defaults (change any with "
        "--set) and print the final test metrics.",
    )
    p.add_argument("--approach", required=True, help=APPROACH_HELP)
    add_training_options(p, "override a hyperparameter (repeatable), e.g. --set lr=1e-3")
    p.add_argument("--seed", type=int, default=0, help="training seed (default 0)")
    p.add_argument(
        "--fold",
        type=int,
        default=0,
        help="with --set split=kfold: the fold tested, 0 to folds-1 (default 0)",
    )
    p.add_argument(
        "--skip-bad",
        action="store_true",
        help="skip unreadable images (listed on stderr) instead of stopping",
    )
    p.add_argument(
        "--no-resume", action="store_true", help="do not save or resume from per-epoch checkpoints"
    )
    p.add_argument("--out", type=Path, help="write the result (metrics, history) as JSON")
    p.add_argument("--experiment", help="MLflow experiment (default: the dataset's name)")
    p.add_argument("--suite", default="", help="suite tag of the MLflow run")
    p.add_argument("--no-model", action="store_true", help="do not log the trained model")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser(
        "compare",
        help="train several approaches on one dataset, write a table",
        description="Train each approach (and seed) on the same split (with --set split=kfold: "
        "every fold); results go to OUT/<approach>-<dataset>-seed<S>[-fold<F>].json and the "
        "table to OUT/results.csv and "
        "OUT/results.md. Finished results are kept: a re-run of the same settings resumes; "
        "other settings over a kept result are refused.",
    )
    p.add_argument("--approach", nargs="+", help="approaches (default: all; `list` shows them)")
    add_training_options(p, "override a hyperparameter of every approach")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default 0)")
    p.add_argument("--out", type=Path, default=Path("reports/latest"), help="output folder")
    p.add_argument("--experiment", help="MLflow experiment (default: the dataset's name)")
    p.add_argument("--suite", default="", help="suite tag of the MLflow runs")
    p.add_argument("--report", action="store_true", help="then write OUT/index.html")
    p.set_defaults(func=cmd_compare)

    p = sub.add_parser(
        "ablate",
        help="one approach with one setting varied: paired comparison on the same splits",
        description="Train an approach once per value of one setting and seed, on the same split "
        "(each a compare run tracked in MLflow, kept in OUT/KEY=VALUE/), then tabulate each "
        "value against the first: test accuracy with a two-level bootstrap interval (seeds, "
        "then each seed's images resampled), the paired difference, and an exact McNemar test "
        "on the discordant images (Holm-adjusted). Re-running resumes.",
    )
    p.add_argument("--approach", required=True, help=APPROACH_HELP)
    p.add_argument(
        "--vary",
        required=True,
        metavar="KEY=V1,V2",
        help="a hyperparameter (e.g. alphabet=dataset,alnum) or a run option (precision=fp32,bf16)",
    )
    add_training_options(p, "fix a hyperparameter of every variant")
    p.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)"
    )
    p.add_argument("--out", type=Path, help="default reports/ablations/APPROACH-KEY")
    p.add_argument("--experiment", default="ablations", help="MLflow experiment (ablations)")
    p.set_defaults(func=cmd_ablate)

    p = sub.add_parser(
        "tune",
        help="an Optuna study of one approach's search space",
        description="Tune an approach on the validation split (the test split is "
        "never used). Re-running the same command resumes the study "
        "until --trials trials have finished.",
    )
    p.add_argument("--approach", required=True, help=APPROACH_HELP)
    add_training_options(p, "fix a hyperparameter for every trial (it is not searched)")
    p.add_argument("--trials", type=int, required=True, help="trials to finish in the study")
    p.add_argument(
        "--storage",
        help="SQLAlchemy URL or journal file (default: "
        "$BENCH_OPTUNA_STORAGE, else sqlite:///optuna.db)",
    )
    p.add_argument("--study", help="study name (default: SUITE/DATASET/APPROACH)")
    p.add_argument("--suite", default="", help="suite name, part of the default study name")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--pruner", default="median", choices=["median", "hyperband", "none"])
    p.add_argument("--sampler", default="tpe", choices=["tpe", "random"])
    p.add_argument(
        "--workers",
        type=workers_arg,
        default=1,
        help="processes working on the study, or auto (CUDA: as many per GPU as fit, up to 8)",
    )
    p.add_argument("--seed", type=int, default=0, help="training seed of the trials")
    p.add_argument("--experiment", help="MLflow experiment (default: the dataset's name)")
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser(
        "run",
        help="run a suite: tuning, final multi-seed trainings, report",
        description="Run a suite from experiments/: per dataset and approach an Optuna study "
        "with the suite's trial budget, then one final training per seed with the best "
        "parameters, all tracked in MLflow; then the HTML report and a summary table. "
        "Interrupt it at any time: the same command resumes, redoing nothing that finished.",
    )
    p.add_argument(
        "--suite",
        nargs="+",
        help="suite names in experiments/ or YAML files, run in turn into one report (default: "
        "leaderboard and leaderboard-tuned with CUDA, else quick)",
    )
    p.add_argument(
        "--storage",
        help="Optuna storage (default: $BENCH_OPTUNA_STORAGE, else sqlite:///optuna.db)",
    )
    add_run_options(p)
    p.add_argument(
        "--data-dir", type=Path, help="folder holding datasets (else $BENCH_DATA_DIR, the cache)"
    )
    p.add_argument("--out", type=Path, help="report file (default reports/SUITE/index.html)")
    p.add_argument("--quiet", action="store_true", help="no progress bar (log lines only)")
    p.add_argument(
        "--ablations",
        type=Path,
        help="folder of `ablate` outputs (e.g. reports/ablations) for a 'What matters' section "
        "in the report (default: none)",
    )
    p.add_argument(
        "--plan",
        action="store_true",
        help="list the suite's units, epochs and steps and estimate its wall time on this "
        "machine from a short probe of each approach; trains nothing, creates no MLflow run "
        "or Optuna study (every run prints this plan first)",
    )
    p.add_argument(
        "--workers",
        type=workers_arg,
        help="worker processes on this machine (this one included), or auto (CUDA: as many "
        "per GPU as fit, up to 8); default: the suite's `workers` (1 where it says none); "
        "more machines: start the same command there with the same --storage and "
        "MLFLOW_TRACKING_URI",
    )
    p.set_defaults(func=cmd_run)

    p = sub.add_parser(
        "perf",
        help="measure the training pipeline's speed",
        description="Per approach: train and eval img/s of the real pipeline and of pure "
        "compute (pipeline efficiency), the speed-up over a sources'-style PIL DataLoader loop, "
        "one epoch's wall time, single-image latency, peak memory and achieved FLOP/s against "
        "a measured matrix-multiply peak; on CUDA also the step captured as CUDA graphs and "
        "the aggregate img/s of 1, 2, 4 and 8 processes training at once.",
    )
    p.add_argument("--approach", nargs="+", help="approaches (default: all; `list` shows them)")
    add_training_options(p, "override a hyperparameter of every approach")
    p.add_argument("--batch-size", type=int, help="batch size (default: each approach's own)")
    p.add_argument("--steps", type=int, default=20, help="timed steps per measurement")
    p.add_argument(
        "--loader-workers", type=int, default=0, help="DataLoader workers of the sources' loop"
    )
    p.add_argument(
        "--concurrency",
        type=int,
        nargs="*",
        help="process counts training at once on the device: aggregate img/s columns "
        "img_s_xN (default: 1 2 4 8 on CUDA, none on CPU)",
    )
    p.add_argument("--out", type=Path, help="write the table as .json or .csv")
    p.add_argument("--mlflow", action="store_true", help="log the figures to MLflow (perf)")
    p.set_defaults(func=cmd_perf)

    p = sub.add_parser(
        "predict",
        help="read images with a logged model",
        description="Load a model logged by train (an MLflow run id, a runs:/ or "
        "models:/ URI, or a local model folder) and print what it reads.",
    )
    p.add_argument("--model", required=True, help="MLflow run id, model URI or folder")
    p.add_argument("images", nargs="+", type=Path, help="image files")
    p.set_defaults(func=cmd_predict)

    p = sub.add_parser(
        "report",
        help="write the HTML comparison report from MLflow",
        description="Read the finished runs (and tuning studies) of the given experiments from "
        "MLflow and write one self-contained HTML page.",
    )
    p.add_argument(
        "--experiment",
        action="extend",
        nargs="+",
        help="MLflow experiments (--experiment A B, or repeated; default: all)",
    )
    p.add_argument("--suite", help="only the runs of this suite")
    p.add_argument(
        "--storage", help="Optuna storage of the studies (default: as each study recorded it)"
    )
    p.add_argument("--out", type=Path, default=Path("reports/latest/index.html"))
    p.add_argument(
        "--ablations",
        type=Path,
        help="folder of `ablate` outputs (e.g. reports/ablations) for a 'What matters' section "
        "in the report (default: none)",
    )
    p.set_defaults(func=cmd_report)

    p = sub.add_parser(
        "ui",
        help="open MLflow's UI on the runs, in its training view",
        description="Print a link that opens MLflow's UI on an experiment's runs in the training "
        "(machine learning) view, then serve the local store with `mlflow ui` (a tracking "
        "server given by MLFLOW_TRACKING_URI is linked, not served).",
    )
    p.add_argument("--experiment", help="experiment to open (default: the latest updated)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5000)
    p.add_argument("--no-serve", action="store_true", help="print the link only")
    p.set_defaults(func=cmd_ui)

    p = sub.add_parser(
        "dashboard",
        help="open optuna-dashboard on the tuning studies",
        description="Serve the Optuna storage with optuna-dashboard: each tuning study with its "
        "objective's name; the suites' final trainings are the studies ending in /final.",
    )
    p.add_argument(
        "--storage",
        help="Optuna storage (default: $BENCH_OPTUNA_STORAGE, else sqlite:///optuna.db)",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser(
        "cache",
        help="show or prune the cache (checkpoints, decoded stores, renders)",
        description="Show what the cache ($BENCH_CACHE_DIR, else ~/.cache/captcha-bench) holds. "
        "prune removes stale checkpoints (their approach's code changed since: no run reuses "
        "them); prune --all also every checkpoint, decoded store and rendered dataset "
        "(downloaded datasets stay).",
    )
    p.add_argument("action", nargs="?", choices=["show", "prune"], default="show")
    p.add_argument("--all", action="store_true", help="with prune: everything but downloads")
    p.set_defaults(func=cmd_cache)
    return parser


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # a kill ends runs as KILLED and saves what is done, like Ctrl-C


def joined_negative_values(argv: list[str]) -> list[str]:
    """``--budget -5m`` as ``--budget=-5m``: argparse takes a value starting with '-' for an
    option, so the check of the value (not "expected one argument") says what is wrong."""
    out: list[str] = []
    for arg in argv:
        if out and out[-1] == "--budget" and arg.startswith("-") and arg[1:2].isdigit():
            out[-1] = f"--budget={arg}"
        else:
            out.append(arg)
    return out


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(joined_negative_values(sys.argv[1:] if argv is None else argv))
    if names := getattr(args, "approach", None):
        try:
            check_approach_names([names] if isinstance(names, str) else names)
        except KeyError as err:
            print(f"error: {err.args[0]}", file=sys.stderr)
            return 2
    signal.signal(signal.SIGTERM, _interrupt)
    keep_freed_memory()  # CPU steps stop page-faulting their activations in anew (bench.allocator)
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # our bars suffice
    os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")  # a line per run
    # the console holds the project's own lines: MLflow's loggers (configured from this variable
    # when MLflow is imported, also in worker processes), alembic's and Optuna's at WARNING
    level = "INFO" if args.verbose else "WARNING"
    if args.verbose:
        os.environ["MLFLOW_LOGGING_LEVEL"] = level
    else:
        os.environ.setdefault("MLFLOW_LOGGING_LEVEL", level)
    os.environ["BENCH_LOG_LEVEL"] = level
    logging.getLogger("alembic").setLevel(level)
    try:
        code = args.func(args)
    except USER_ERRORS as err:
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"error: {message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted; re-run the same command to resume", file=sys.stderr)
        return 130
    except Exception as err:  # MLflow refusing a setting (a store, an experiment id): one line
        if not type(err).__module__.startswith("mlflow."):
            raise
        print(f"error: MLflow: {first_line(err)}", file=sys.stderr)
        return 2
    return code or 0
