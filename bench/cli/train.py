"""``train`` (one approach, its test metrics), ``compare`` (several on one split, a table),
``curve`` (learning curves over nested training subsets) and ``predict`` (read images with a
logged model)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.cli import options as opt
from bench.cli.prepare import load_dataset, preflight, recipe_from
from bench.errors import DataError
from bench.paths import cache_dir


def add_train(sub: argparse._SubParsersAction) -> None:
    p = opt.add_command(sub, "train", cmd_train, "train one approach and print its test metrics")
    opt.add_approach_option(p)
    opt.add_training_options(p, "override a hyperparameter (repeatable), e.g. --set lr=1e-3")
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
    opt.add_tracking_options(p, "suite tag of the MLflow run")
    p.add_argument("--no-model", action="store_true", help="do not log the trained model")


def cmd_train(args: argparse.Namespace) -> None:
    """Train one approach with its source's defaults (change any with --set) and print the final
    test metrics."""
    overrides = opt.overrides_from(args, args.approach)
    dataset = load_dataset(
        args.dataset, data_dir=args.data_dir, split_seed=args.split_seed, skip_bad=args.skip_bad
    )
    spec = recipe_from(args, args.approach, dataset, overrides).spec(seed=args.seed, fold=args.fold)
    preflight(out_file=args.out)
    from bench.tracking.record import train_tracked
    from bench.training import EpochLines

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


def add_compare(sub: argparse._SubParsersAction) -> None:
    p = opt.add_command(
        sub, "compare", cmd_compare, "train several approaches on one dataset, write a table"
    )
    opt.add_approach_option(p, many=True)
    opt.add_training_options(p, "override a hyperparameter of every approach")
    p.add_argument("--seeds", type=int, nargs="+", default=[0], help="training seeds (default 0)")
    p.add_argument("--out", type=Path, default=Path("reports/latest"), help="output folder")
    opt.add_tracking_options(p, "suite tag of the MLflow runs")
    p.add_argument("--report", action="store_true", help="then write OUT/index.html")


def cmd_compare(args: argparse.Namespace) -> None:
    """Train each approach (and seed) on the same split (with --set split=kfold: every fold);
    results go to OUT/<approach>-<dataset>-seed<S>[-fold<F>].json and the table to
    OUT/results.csv and OUT/results.md. Finished results are kept: a re-run of the same settings
    resumes; other settings over a kept result are refused."""
    from bench.results import train_and_record, write_table

    approaches = opt.approaches_from(args)
    overrides = opt.overrides_from(args, *approaches)
    dataset = load_dataset(args.dataset, data_dir=args.data_dir, split_seed=args.split_seed)
    recipes = [recipe_from(args, name, dataset, overrides) for name in approaches]
    specs = [
        recipe.spec(seed=seed, fold=fold)
        for recipe in recipes
        for seed in args.seeds
        for fold in recipe.folds()
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


def add_curve(sub: argparse._SubParsersAction) -> None:
    p = opt.add_command(
        sub, "curve", cmd_curve, "learning curves: accuracy against the number of training images"
    )
    opt.add_approach_option(p, many=True)
    opt.add_training_options(p, "override a hyperparameter of every approach")
    p.add_argument(
        "--sizes",
        default="50,100,200,400,all",
        help="training images per point, nested subsets of the training part (default "
        "50,100,200,400,all)",
    )
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="training seeds (0 1)")
    p.add_argument("--out", type=Path, default=Path("reports/curves"), help="output folder")
    p.add_argument("--experiment", default="curves", help="MLflow experiment (default curves)")


def cmd_curve(args: argparse.Namespace) -> None:
    """Train each approach with its source's recipe on nested random subsets of the training
    images (the smaller inside the larger, the same for every approach; with --set split=kfold
    on every fold's), each tested on the same held-out images, with as many epochs as keep the
    full recipe's optimizer steps (to within one epoch). Results go to OUT/size-N/, the table to
    OUT/curve.csv; every point is an MLflow run (tags curve_size, subset). Re-running resumes."""
    from bench.curve import curve_specs, parse_sizes, run_curve

    sizes = parse_sizes(args.sizes)
    approaches = opt.approaches_from(args)
    overrides = opt.overrides_from(args, *approaches)
    dataset = load_dataset(args.dataset, data_dir=args.data_dir, split_seed=args.split_seed)
    points = [
        point
        for name in approaches
        for point in curve_specs(
            recipe_from(args, name, dataset, overrides), dataset, sizes, args.seeds
        )
    ]
    preflight(out_folder=args.out)
    table = run_curve(points, dataset, args.out, args.experiment, progress=not args.quiet)
    print(table.round(4).to_string(index=False))
    print(f"{len(points)} runs; table in {args.out / 'curve.csv'}")


def add_predict(sub: argparse._SubParsersAction) -> None:
    p = opt.add_command(sub, "predict", cmd_predict, "read images with a logged model")
    p.add_argument(
        "--model",
        required=True,
        help="MLflow run id, model URI or folder, or an ONNX file of `export` (onnxruntime)",
    )
    p.add_argument("images", nargs="+", type=Path, help="image files")


def cmd_predict(args: argparse.Namespace) -> None:
    """Load a model logged by train (an MLflow run id, a runs:/ or models:/ URI, or a local
    model folder) or exported to ONNX, and print what it reads."""
    from bench.recognizer import read_images

    for path in args.images:  # before loading the model
        if not path.is_file():
            raise DataError(f"{path}: no such file")
    if args.model.endswith(".onnx"):
        from bench.export import OnnxReader

        if not Path(args.model).is_file():
            raise DataError(f"{args.model}: no such file")
        model = OnnxReader(Path(args.model))
        meta = model.meta
    else:
        from bench.tracking.models import load_recognizer

        model, meta = load_recognizer(args.model)
    for path, text in zip(args.images, read_images(model, meta, args.images), strict=True):
        print(f"{path}\t{text}")


def add_export(sub: argparse._SubParsersAction) -> None:
    p = opt.add_command(
        sub, "export", cmd_export, "export a logged model to ONNX, checked against PyTorch"
    )
    p.add_argument("--run", required=True, help="MLflow run id of a run that logged a model")
    p.add_argument("--format", choices=("onnx",), default="onnx", help="the file format")
    p.add_argument("--out", type=Path, help="the file (default: APPROACH-RUNID.onnx)")
    p.add_argument("--data-dir", help="a folder holding the run's dataset (for the check)")


def cmd_export(args: argparse.Namespace) -> int:
    """Export the run's model, read the run's test images with onnxruntime and with PyTorch,
    log the file and the check to the run; exit 1 if any image reads differently."""
    from bench.data import load_dataset
    from bench.export import OnnxReader, check_parity, export_onnx
    from bench.preflight import writable_file
    from bench.recognizer import decode_images
    from bench.tracking.models import log_export, logged_weights
    from bench.tracking.query import predictions
    from bench.tracking.record import PREDICTIONS

    logged = logged_weights(args.run)
    out = args.out or Path(f"{logged.meta['approach']}-{args.run[:8]}.onnx")
    writable_file(out, "--out")
    dataset = load_dataset(logged.tags["dataset"], data_dir=args.data_dir)
    test = predictions(args.run, PREDICTIONS, "predictions.csv")
    images = decode_images(logged.meta, [dataset.source.root / f for f in test.file])
    recognizer = logged.recognizer()
    export_onnx(recognizer, logged.meta, out)
    parity = check_parity(recognizer, OnnxReader(out), images)
    log_export(
        args.run, out, {"onnx_parity": parity.share, "onnx_max_abs_logit_diff": parity.max_abs_diff}
    )
    print(
        f"exported {out}: onnxruntime and PyTorch read the same string for {parity.same} of "
        f"{parity.images} test images ({parity.share:.2%}); largest logit difference "
        f"{parity.max_abs_diff:.2e}; logged to run {args.run} as export/{out.name}"
    )
    return 0 if parity.same == parity.images else 1


def add_register(sub: argparse._SubParsersAction) -> None:
    p = opt.add_command(
        sub,
        "register",
        cmd_register,
        "register a run's model; @champion only if significantly better, else @challenger",
    )
    p.add_argument("--run", required=True, help="MLflow run id of a run that logged a model")
    p.add_argument("--name", help="registered model (default: captcha-bench-<its dataset>)")
    p.add_argument(
        "--alpha", type=float, default=0.05, help="level of the exact McNemar test (two-sided)"
    )


def cmd_register(args: argparse.Namespace) -> None:
    """Register the run's model and move ``@champion`` to it only on a significant gain over the
    current champion on the same test images."""
    from bench.champion import register

    decision = register(args.run, args.name, args.alpha)
    where = f"models:/{decision.name}@{decision.alias}"
    if decision.champion_run is None:
        print(f"registered {decision.name} version {decision.version} as {where} (the first)")
        return
    print(
        f"registered {decision.name} version {decision.version} as {where}: against the champion "
        f"(run {decision.champion_run}) on {decision.images} test images it reads "
        f"{decision.gained} the champion misses and misses {decision.lost} it reads; exact "
        f"McNemar p = {decision.p:.3g} (alpha {args.alpha})"
    )
