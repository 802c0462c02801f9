"""``train`` (one approach, its test metrics), ``compare`` (several on one split, a table) and
``curve`` (learning curves over nested training subsets)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from bench.cli import options as opt
from bench.cli.prepare import load_dataset, preflight, recipe_from
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
