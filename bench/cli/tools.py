"""The commands around the benchmark: ``list`` (the approaches), ``perf`` (the pipeline's speed),
``ui`` and ``dashboard`` (MLflow's and Optuna's UIs) and ``cache`` (what the cache holds)."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from bench.cli import options as opt
from bench.cli.prepare import load_dataset, preflight, recipe_from
from bench.paths import cache_dir

LIST_LEGEND = (
    "source: the write-up it reproduces; loss: ce (a class per character position) or ctc "
    "(a class per image column, aligned by CTC); input: channels x height x width; params: "
    "for captcha-v2"
)


def add_list(sub: argparse._SubParsersAction) -> None:
    opt.add_command(sub, "list", cmd_list, "list the registered approaches")


def cmd_list(args: argparse.Namespace) -> None:
    import shutil
    import textwrap

    rows = approach_rows()
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
    print(textwrap.fill(LIST_LEGEND, width))


def approach_rows() -> list[tuple[str, ...] | str]:
    """Per approach a table row (name, source, loss, input shape, parameters for captcha-v2),
    then its summary."""
    import torch

    from bench.approaches import get_approach, list_approaches
    from bench.data.sources import CAPTCHA_V2_CHARSET
    from bench.hparams import TrainConfig
    from bench.spec import create_model

    rows: list[tuple[str, ...] | str] = []
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
    return rows


def add_perf(sub: argparse._SubParsersAction) -> None:
    p = opt.add_command(sub, "perf", cmd_perf, "measure the training pipeline's speed")
    opt.add_approach_option(p, many=True)
    opt.add_training_options(p, "override a hyperparameter of every approach")
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
    deploy = p.add_argument_group("deployment latency (instead of the training pipeline's speed)")
    deploy.add_argument(
        "--latency",
        action="store_true",
        help="time each approach's recognizer per runtime (PyTorch, onnxruntime, CUDA where "
        "there is one) and batch size: p50/p95/p99 ms per call",
    )
    deploy.add_argument("--batches", type=int, nargs="+", default=[1, 32], help="batch sizes")
    deploy.add_argument("--warmup", type=int, default=50, help="untimed calls first")
    deploy.add_argument("--runs", type=int, default=200, help="timed calls")


def cmd_perf(args: argparse.Namespace) -> None:
    """Per approach: train and eval img/s of the real pipeline and of pure compute (pipeline
    efficiency), the speed-up over a sources'-style PIL DataLoader loop, one epoch's wall time,
    single-image latency, peak memory and achieved FLOP/s against a measured matrix-multiply
    peak; on CUDA also the step captured as CUDA graphs and the aggregate img/s of 1, 2, 4 and 8
    processes training at once."""
    from bench.perf import check_output, perf, write

    if args.out:
        check_output(args.out)  # before any measuring
    if args.latency:
        return cmd_latency(args)
    preflight(tracking=args.mlflow)
    approaches = opt.approaches_from(args)
    overrides = opt.overrides_from(args, *approaches)
    if args.batch_size:
        overrides["batch_size"] = args.batch_size
    dataset = load_dataset(args.dataset, data_dir=args.data_dir, split_seed=args.split_seed)
    specs = [recipe_from(args, name, dataset, overrides).spec() for name in approaches]
    concurrency = args.concurrency
    if concurrency is None:  # the many-trials-per-GPU sweep; a CPU training uses every core
        concurrency = [1, 2, 4, 8] if specs[0].device == "cuda" else []
    frame = perf(
        specs,
        dataset,
        args.steps,
        args.loader_workers,
        concurrency=tuple(concurrency),
        data_dir=opt.data_dir_of(args),
    )
    shown = frame.drop(columns=["flops_per_image"]).round(3)
    print(shown.to_string(index=False))
    if args.out:
        write(frame, args.out)
        print(f"written to {args.out}")
    if args.mlflow:
        log_perf(frame, args.device, dataset.name, args.steps)


def cmd_latency(args: argparse.Namespace) -> None:
    """``perf --latency``: the deployment latency table (:mod:`bench.latency`)."""
    from bench.latency import latency
    from bench.perf import write

    if min(args.batches) < 1 or args.warmup < 0 or args.runs < 1:
        raise ValueError("--batches and --runs must be at least 1, --warmup at least 0")
    frame = latency(opt.approaches_from(args), args.batches, args.warmup, args.runs)
    print(frame.round(3).to_string(index=False))
    if args.out:
        write(frame, args.out)
        print(f"written to {args.out}")


def log_perf(frame, device: str, dataset: str, steps: int) -> None:
    """The perf table in MLflow (experiment ``perf``): a metric per approach and column."""
    from bench.tracking import log_perf as log

    figures = {
        row["approach"]: {k: float(v) for k, v in row.items() if isinstance(v, int | float)}
        for row in frame.to_dict("records")
    }
    params = {"dataset": dataset, "steps": steps}
    log(f"perf {device} {dataset}", params, figures, frame, "perf")


def add_ui(sub: argparse._SubParsersAction) -> None:
    p = opt.add_command(sub, "ui", cmd_ui, "open MLflow's UI on the runs, in its training view")
    p.add_argument("--experiment", help="experiment to open (default: the latest updated)")
    opt.add_serve_options(p, port=5000)
    p.add_argument("--no-serve", action="store_true", help="print the link only")


def cmd_ui(args: argparse.Namespace) -> None:
    """Print a link that opens MLflow's UI on an experiment's runs in the training (machine
    learning) view, then serve the local store with `mlflow ui` (a tracking server given by
    MLFLOW_TRACKING_URI is linked, not served)."""
    from bench.tracking import latest_experiment, tracking_uri, training_view

    uri = tracking_uri()
    served = uri.startswith(("http://", "https://"))
    base = None if served else f"http://{args.host}:{args.port}"
    experiment = args.experiment or latest_experiment()
    print(f"MLflow UI of {uri}, training view: {training_view(experiment, base)}", flush=True)
    if served or args.no_serve:
        return
    serve(args, "mlflow", "ui", "--backend-store-uri", uri)


def add_dashboard(sub: argparse._SubParsersAction) -> None:
    p = opt.add_command(
        sub, "dashboard", cmd_dashboard, "open optuna-dashboard on the tuning studies"
    )
    opt.add_storage_option(p)
    opt.add_serve_options(p, port=8080)


def cmd_dashboard(args: argparse.Namespace) -> None:
    """Serve the Optuna storage with optuna-dashboard: each tuning study with its objective's
    name; the suites' final trainings are the studies ending in /final."""
    from bench.orchestration import storage_url

    storage = storage_url(args.storage)
    print(f"Optuna dashboard of {storage}: http://{args.host}:{args.port}/", flush=True)
    serve(args, "optuna_dashboard", storage)


def serve(args: argparse.Namespace, module: str, *module_args: str) -> None:
    """This process becomes ``python -m MODULE ARGS... --host HOST --port PORT``."""
    command = [sys.executable, "-m", module, *module_args]
    os.execv(sys.executable, [*command, "--host", args.host, "--port", str(args.port)])


def add_cache(sub: argparse._SubParsersAction) -> None:
    p = opt.add_command(
        sub, "cache", cmd_cache, "show or prune the cache (checkpoints, decoded stores, renders)"
    )
    p.add_argument("action", nargs="?", choices=["show", "prune"], default="show")
    p.add_argument("--all", action="store_true", help="with prune: everything but downloads")


def cmd_cache(args: argparse.Namespace) -> None:
    """Show what the cache ($BENCH_CACHE_DIR, else ~/.cache/captcha-bench) holds. prune removes
    stale checkpoints (their approach's code changed since: no run reuses them); prune --all
    also every checkpoint, decoded store and rendered dataset (downloaded datasets stay)."""
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
