"""``ablate`` (one approach with one setting varied, its paired table) and ``report`` (the HTML
comparison page from MLflow)."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import yaml

from bench.cli import options as opt
from bench.cli.prepare import load_dataset, preflight, recipe_from
from bench.options import HOW_KEYS


def add_ablate(sub: argparse._SubParsersAction) -> None:
    p = opt.add_command(
        sub,
        "ablate",
        cmd_ablate,
        "one approach with one setting varied: paired comparison on the same splits",
    )
    opt.add_approach_option(p)
    p.add_argument(
        "--vary",
        required=True,
        metavar="KEY=V1,V2",
        help="a hyperparameter (e.g. alphabet=dataset,alnum) or a run option (precision=fp32,bf16)",
    )
    opt.add_training_options(p, "fix a hyperparameter of every variant")
    p.add_argument(
        "--seeds", type=int, nargs="+", default=[0, 1, 2], help="training seeds (default 0 1 2)"
    )
    p.add_argument("--out", type=Path, help="default reports/ablations/APPROACH-KEY")
    p.add_argument("--experiment", default="ablations", help="MLflow experiment (ablations)")


def parse_variation(text: str) -> tuple[str, list[Any]]:
    """``KEY=V1,V2[,...]``: the values read as YAML, at least two."""
    key, sep, values = text.partition("=")
    parsed = [yaml.safe_load(v) for v in values.split(",") if v.strip()]
    if not sep or not key or len(parsed) < 2:
        raise ValueError(f"--vary expects KEY=V1,V2[,...] (two values at least), got {text!r}")
    return key.strip(), parsed


def cmd_ablate(args: argparse.Namespace) -> None:
    """Train an approach once per value of one setting and seed, on the same split (each a
    compare run tracked in MLflow, kept in OUT/KEY=VALUE/), then tabulate each value against the
    first: test accuracy with a two-level bootstrap interval (seeds, then each seed's images
    resampled), the paired difference, and an exact McNemar test on the discordant images
    (Holm-adjusted). Re-running resumes."""
    from bench.ablate import run_ablation

    key, values = parse_variation(args.vary)
    base = opt.overrides_from(args, args.approach)
    dataset = load_dataset(args.dataset, data_dir=args.data_dir, split_seed=args.split_seed)

    def variant(value: Any, seed: int):
        if key in HOW_KEYS:  # how to run (precision, graphs, ...), not a hyperparameter
            return recipe_from(args, args.approach, dataset, base, **{key: value}).spec(seed=seed)
        return recipe_from(args, args.approach, dataset, {**base, key: value}).spec(seed=seed)

    specs = [(value, variant(value, seed)) for value in values for seed in args.seeds]
    out = args.out or Path("reports/ablations") / f"{args.approach}-{key}"
    preflight(out_folder=out)
    table = run_ablation(
        specs, dataset, key, out, experiment=args.experiment, progress=not args.quiet
    )
    print((out / "ablation.md").read_text(), end="")
    print(f"{len(table)} variants; table in {out / 'ablation.csv'}")


def add_report(sub: argparse._SubParsersAction) -> None:
    p = opt.add_command(sub, "report", cmd_report, "write the HTML comparison report from MLflow")
    p.add_argument(
        "--experiment",
        action="extend",
        nargs="+",
        help="MLflow experiments (--experiment A B, or repeated; default: all)",
    )
    p.add_argument("--suite", help="only the runs of this suite")
    opt.add_storage_option(p, "Optuna storage of the studies (default: as each study recorded it)")
    p.add_argument("--out", type=Path, default=Path("reports/latest/index.html"))
    opt.add_section_options(p)
    p.add_argument(
        "--sections-only",
        action="store_true",
        help="a page of those sections and the runs' provenance alone, without leaderboards",
    )


def cmd_report(args: argparse.Namespace) -> None:
    """Read the finished runs (and tuning studies) of the given experiments from MLflow and
    write one self-contained HTML page."""
    from bench.preflight import writable_file
    from bench.report import build_report

    writable_file(args.out, "--out")
    out = build_report(
        args.out,
        experiments=args.experiment,
        suite=args.suite,
        optuna_storage=args.storage,
        ablations=args.ablations,
        curves=args.curves,
        robustness=args.robustness,
        sections_only=args.sections_only,
    )
    print(f"report written to {out}")
