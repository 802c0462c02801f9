"""Commands on trained models: ``predict`` (read images), ``export`` (ONNX, checked against
PyTorch), ``register`` (the model registry's champion gate) and ``robustness`` (corrupted test
images read without retraining)."""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.cli import options as opt
from bench.errors import DataError


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

    logged = logged_weights(args.run)
    out = args.out or Path(f"{logged.meta['approach']}-{args.run[:8]}.onnx")
    writable_file(out, "--out")
    dataset = load_dataset(logged.tags["dataset"], data_dir=args.data_dir)
    test = predictions(args.run)
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
    from bench.champion import describe, register

    print(f"{describe(register(args.run, args.name, args.alpha))} (alpha {args.alpha})")


def add_robustness(sub: argparse._SubParsersAction) -> None:
    p = opt.add_command(
        sub,
        "robustness",
        cmd_robustness,
        "read corrupted copies of the test images with logged models, without retraining",
    )
    p.add_argument(
        "--run", required=True, nargs="+", help="MLflow run ids of runs that logged a model"
    )
    p.add_argument("--corruptions", help="a,b,... (default: all eight)")
    p.add_argument("--severities", help="levels 1-5, e.g. 1-3 or 1,3,5 (default: 1-5)")
    p.add_argument(
        "--out", type=Path, default=Path("reports/robustness"), help="folder of the tables and page"
    )
    p.add_argument("--data-dir", help="a folder holding the runs' dataset")
    opt.add_quiet_option(p, "no progress bars")


def cmd_robustness(args: argparse.Namespace) -> None:
    """Read each run's test images, clean and corrupted (each corruption at each severity, the
    same pixels for every model), with the run's logged model; log the readings to the run (a
    second call reads them back); write OUT/robustness.csv (per model, corruption and severity),
    OUT/robustness-summary.csv (per model: the means over corruptions, relative to clean, and
    the differences from the best) and the page OUT/index.html."""
    from bench.data.corruptions import parse_corruptions, parse_severities
    from bench.preflight import reachable_tracking, writable_cache, writable_folder
    from bench.report import build_report
    from bench.robustness import corruption_table, evaluate, summary_table, test_files
    from bench.tracking.models import check_run_has_model
    from bench.tracking.query import run_experiment

    corruptions, severities = parse_corruptions(args.corruptions), parse_severities(args.severities)
    writable_folder(args.out, "--out")
    writable_cache()  # the corrupted copies are cached
    reachable_tracking()
    runs = list(dict.fromkeys(args.run))
    experiments = sorted({run_experiment(r) for r in runs})  # every run exists,
    for run_id in runs:
        check_run_has_model(run_id)  # logged a model
    test_files(runs)  # and tested the same images as the others
    readings = [
        evaluate(r, corruptions, severities, args.data_dir, progress=not args.quiet) for r in runs
    ]
    table, summary = corruption_table(readings), summary_table(readings)
    args.out.mkdir(parents=True, exist_ok=True)
    table.to_csv(args.out / "robustness.csv", index=False)
    summary.to_csv(args.out / "robustness-summary.csv", index=False)
    shown = summary[["model", "runs", "clean_seq_acc", "mild_seq_acc", "all_seq_acc", "p_holm"]]
    print(shown.round(4).to_string(index=False))
    page = build_report(
        args.out / "index.html", experiments=experiments, robustness=args.out, sections_only=True
    )
    print(f"tables in {args.out}; page {page}")
