"""``tune`` (an Optuna study of one approach) and ``run`` (a suite: its studies, final trainings
and report)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from bench.cli import options as opt
from bench.cli.prepare import how_from, load_dataset, preflight, recipe_from, workers_from
from bench.errors import ReportError
from bench.options import resolve_device

SUMMARY_LEGEND = (
    "n: final runs (seeds x folds); seq_acc, char_acc, cer: pooled over their test images, "
    "(low-high) a 95% interval (runs, then images resampled); params: model parameters; "
    "train_s: mean training seconds per run (validation excluded)"
)


def add_tune(sub: argparse._SubParsersAction) -> None:
    p = opt.add_command(sub, "tune", cmd_tune, "an Optuna study of one approach's search space")
    opt.add_approach_option(p)
    opt.add_training_options(p, "fix a hyperparameter for every trial (it is not searched)")
    p.add_argument("--trials", type=int, required=True, help="trials to finish in the study")
    opt.add_storage_option(p, f"SQLAlchemy URL or journal file {opt.STORAGE_DEFAULT}")
    p.add_argument("--study", help="study name (default: SUITE/DATASET/APPROACH)")
    p.add_argument("--suite", default="", help="suite name, part of the default study name")
    p.add_argument("--timeout", type=float, help="stop starting trials after this many seconds")
    p.add_argument("--pruner", default="median", choices=["median", "hyperband", "none"])
    p.add_argument("--sampler", default="tpe", choices=["tpe", "random"])
    opt.add_workers_option(
        p,
        "processes working on the study, or auto (CUDA: as many per GPU as fit, up to 8)",
        default=1,
    )
    p.add_argument("--seed", type=int, default=0, help="training seed of the trials")
    opt.add_experiment_option(p)


def cmd_tune(args: argparse.Namespace) -> None:
    """Tune an approach on the validation split (the test split is never used). Re-running the
    same command resumes the study until --trials trials have finished."""
    from bench.orchestration import storage_url
    from bench.tune import TuneConfig, study_report, tune

    overrides = opt.overrides_from(args, args.approach)
    resolve_device(args.device)  # no CUDA: an error before any trial
    preflight(storage=storage_url(args.storage))
    # a missing dataset stops here, before any trial
    dataset = load_dataset(args.dataset, data_dir=args.data_dir, split_seed=args.split_seed)
    recipe = recipe_from(args, args.approach, dataset, overrides)
    cfg = TuneConfig(
        recipe=recipe,
        trials=args.trials,
        storage=storage_url(args.storage),
        study=args.study or "",
        suite=args.suite,
        timeout=args.timeout,
        pruner=args.pruner,
        sampler=args.sampler,
        seed=args.seed,
        experiment=args.experiment,
        progress=not args.quiet,
    )
    workers, gpus = workers_from(args, lambda: [(recipe.spec(seed=args.seed), dataset)])
    report = study_report(tune(cfg, workers, gpus))
    for key, value in report.items():
        shown = f"{value:.2%}" if key.startswith("best_val_") and value is not None else value
        print(f"{key:16}  {shown}")


def add_run(sub: argparse._SubParsersAction) -> None:
    p = opt.add_command(
        sub, "run", cmd_run, "run a suite: tuning, final multi-seed trainings, report"
    )
    p.add_argument(
        "--suite",
        nargs="+",
        help="suite names in experiments/ or YAML files, run in turn into one report (default: "
        "leaderboard and leaderboard-tuned with CUDA, else quick)",
    )
    opt.add_storage_option(p)
    opt.add_run_options(p)
    opt.add_data_options(p, split_seed=False)
    p.add_argument("--out", type=Path, help="report file (default reports/SUITE/index.html)")
    opt.add_quiet_option(p, "no progress bar (log lines only)")
    opt.add_section_options(p)
    p.add_argument(
        "--plan",
        action="store_true",
        help="list the suite's units, epochs and steps and estimate its wall time on this "
        "machine from a short probe of each approach; trains nothing, creates no MLflow run "
        "or Optuna study (every run prints this plan first)",
    )
    opt.add_workers_option(
        p,
        "worker processes on this machine (this one included), or auto (CUDA: as many "
        "per GPU as fit, up to 8); default: the suite's `workers` (1 where it says none); "
        "more machines: start the same command there with the same --storage and "
        "MLFLOW_TRACKING_URI",
    )


def cmd_run(args: argparse.Namespace) -> int:
    """Run a suite from experiments/: per dataset and approach an Optuna study with the suite's
    trial budget, then one final training per seed with the best parameters, all tracked in
    MLflow; then the HTML report and a summary table. Interrupt it at any time: the same command
    resumes, redoing nothing that finished."""
    from bench.hparams import format_duration
    from bench.orchestration import storage_url
    from bench.suite import default_suites, load_suite, run_suite

    suites = [load_suite(name) for name in args.suite or default_suites()]
    resolve_device(args.device)  # no CUDA: an error before any work
    storage = storage_url(args.storage)
    out = args.out or Path("reports") / suites[0].name / "index.html"
    if not args.plan:  # the plan creates nothing; a run checks everything it will write first
        preflight(out_file=out, storage=storage)
    recipes = [suite.recipes(args.data_dir, **how_from(args)) for suite in suites]
    plans = [plan_run(args, suite, units) for suite, units in zip(suites, recipes, strict=True)]
    if len(plans) > 1:
        total = sum(plan.wall_s for plan, _, _ in plans)
        print(f"estimated wall time of the {len(plans)} suites: {format_duration(total)}")
    if args.plan:
        return 0
    failures = []
    for suite, units, (plan, workers, gpus) in zip(suites, recipes, plans, strict=True):
        outcome = run_suite(
            suite,
            units,
            storage,
            quiet=args.quiet,
            workers=workers,
            gpus=gpus,
            tags={"plan_estimate_s": round(plan.wall_s)},
        )
        failures += outcome.failures
    failures += report_suites(suites, out, storage, args.ablations, args.curves)
    failures += register_suites([s for s in suites if s.register])
    print(where_things_are(suites[0].experiment, storage))
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    return 1 if failures else 0


def report_suites(
    suites: list[Any], out: Path, storage: str, ablations: Path | None, curves: Path | None
) -> list[str]:
    """The suites' report and summary tables; the failure, if the report cannot be built."""
    from bench.report import build_report
    from bench.suite import summary_table

    try:
        build_report(
            out,
            experiments=list(dict.fromkeys(suite.experiment for suite in suites)),
            suite=suites[0].name if len(suites) == 1 else None,
            optuna_storage=storage,
            ablations=ablations,
            curves=curves,
        )
        for suite in suites:
            print(f"suite {suite.name}:\n{summary_table(suite).to_string(index=False)}")
        print(SUMMARY_LEGEND)
        print(f"report written to {out}")
    except ReportError as err:
        return [f"report: {err}"]
    return []


def register_suites(suites: list[Any]) -> list[str]:
    """Per suite and dataset, its best approach's model registered (``bench register``'s
    champion gate); the failures."""
    from bench.champion import describe, register, suite_candidates

    failures = []
    for suite in suites:
        try:
            for dataset, approach, run_id in suite_candidates(suite.experiment, suite.name):
                print(f"suite {suite.name}, {dataset}: best approach {approach}, run {run_id}")
                print(describe(register(run_id)))
        except (ReportError, ValueError) as err:
            failures.append(f"register ({suite.name}): {err}")
    return failures


def where_things_are(experiment: str, storage: str) -> str:
    """Where a suite's runs and studies are, and the commands that open them."""
    from bench.tracking import tracking_uri, training_view

    return (
        f"runs:    MLflow {tracking_uri()}; `make ui` serves it, then open "
        f"{training_view(experiment)}\nstudies: Optuna {storage}; `make dashboard` serves it"
    )


def plan_run(args: argparse.Namespace, suite: Any, recipes: dict) -> tuple[Any, int, list[str]]:
    """A suite's workers (``--workers``, else the suite's) and its plan, printed; ``recipes``:
    the suite's (:meth:`~bench.suite.Suite.recipes`), made with the command line's how-to-run
    (the suite's precision unless ``--precision`` says otherwise)."""
    from bench.suite.plan import plan_suite

    print(f"suite {suite.name} ({suite.path}): {suite.description}", flush=True)

    def probes() -> list[tuple[Any, Any]]:
        return [(final.spec(), final.load_dataset()) for _, final in recipes.values()]

    asked = args.workers if args.workers is not None else suite.workers
    workers, gpus = workers_from(argparse.Namespace(workers=asked, device=args.device), probes)
    plan = plan_suite(suite, recipes, workers)
    print("\n".join(plan.lines()), flush=True)
    return plan, workers, gpus
