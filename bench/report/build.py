"""From a :class:`~bench.report.data.Comparison` to the HTML report: per dataset and suite its
leaderboard, tests, figures and error analysis, then the shared sections, in one page."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import jinja2
import pandas as pd

from bench.errors import ReportError
from bench.report import figures
from bench.report.data import Comparison, load_comparison
from bench.report.format import FILTERS
from bench.report.provenance import provenance, report_arguments, training_setup, wall_time
from bench.report.sections import (
    ablation_tables,
    curve_section,
    error_analysis,
    robustness_section,
    tuning_section,
)
from bench.report.tables import (
    ALPHA,
    CSV_NAME,
    best_marks,
    leaderboard,
    leaderboard_csv,
    paired_tests,
)


def curves_frame(comparison: Comparison, runs: pd.DataFrame) -> pd.DataFrame:
    """Every run's per-epoch history with its approach and replicate (seed/fold)."""
    frames = []
    replicate = runs["tags.seed"].astype(str) + "/" + runs["tags.fold"].astype(str)
    for approach, seed, run_id in zip(runs["tags.approach"], replicate, runs.run_id, strict=True):
        frames.append(comparison.history(run_id).assign(approach=approach, seed=seed))
    return pd.concat(frames, ignore_index=True)


def dataset_section(
    comparison: Comparison, runs: pd.DataFrame, dataset: str, suite: str, name: str
) -> dict[str, Any]:
    """The part of the page of one dataset's runs in one suite: leaderboard, best values, paired
    tests, figures and the leader's errors."""
    table = leaderboard(comparison, runs)
    leader = table.approach.iloc[0]
    curves = curves_frame(comparison, runs)
    equal_time = training_setup(runs)["equal_time"]
    return {
        "name": name,
        "dataset": dataset,
        "suite": suite,
        "table": table,
        "best": best_marks(table, equal_time),
        "equal_time": equal_time,
        "leader": leader,
        "single_seed": bool((table.n < 2).any()),
        "kfold": bool((table.folds > 0).any()),
        "images": int(table.images.max()) if (table.folds > 0).any() else 0,
        "tests": paired_tests(comparison, runs, leader),
        "cost": figures.cost_scatter(table),
        "curves": figures.learning_curves(curves),
        "time_curves": figures.time_curves(curves),
        "errors": error_analysis(
            comparison, runs, leader, str(runs["params.data.charset"].iloc[0])
        ),
    }


def template() -> jinja2.Template:
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("bench.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.filters.update(FILTERS)
    return environment.get_template("report.html.j2")


def build_report(
    out: Path,
    experiments: list[str] | None = None,
    suite: str | None = None,
    optuna_storage: str | None = None,
    ablations: Path | None = None,
    curves: Path | None = None,
    robustness: Path | None = None,
    sections_only: bool = False,
) -> Path:
    """Write the self-contained HTML report of ``experiments`` (optionally one suite) to ``out``
    and its leaderboards' numbers to ``leaderboard.csv`` beside it; with ``ablations``, a folder
    of ``bench ablate`` outputs, a "What matters" section too; with ``curves``, the folder of a
    ``bench curve``, a "Data efficiency" section; with ``robustness``, the folder of a ``bench
    robustness``, a "Robustness" section (with either, experiments holding curve points alone
    give a page of those sections and their provenance, without ``leaderboard.csv``, as does
    ``sections_only``)."""
    try:
        comparison = load_comparison(experiments, suite)
        leaderboards = True
    except ReportError:
        if curves is None and robustness is None:
            raise
        # experiments of learning-curve points alone: a page of the sections, their provenance
        comparison, leaderboards = load_comparison(experiments, suite, points=True), False
    leaderboards = leaderboards and not sections_only
    several = comparison.runs["tags.suite"].nunique() > 1  # e.g. as published, and tuned
    datasets = [
        dataset_section(
            comparison, runs, dataset, name, f"{dataset}: suite {name}" if several else dataset
        )
        for (dataset, name), runs in comparison.runs.groupby(["tags.dataset", "tags.suite"])
        if leaderboards
    ]
    built_with = report_arguments(
        out, experiments, suite, optuna_storage, ablations, curves, robustness, sections_only
    )
    html = template().render(
        title=f"captcha-bench: {suite or ', '.join(comparison.experiments)}",
        generated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        datasets=datasets,
        setup=training_setup(comparison.runs),
        tuning=tuning_section(comparison, optuna_storage),
        failed=comparison.failed,
        ablations=ablation_tables(ablations),
        ablations_dir=str(ablations),
        curves=curve_section(curves),
        robustness=robustness_section(robustness),
        provenance={**provenance(comparison.runs, built_with), "wall": wall_time(comparison)},
        csv_name=CSV_NAME,
        suite=suite,
        alpha=ALPHA,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    if datasets:
        leaderboard_csv(
            {(d["dataset"], d["suite"]): d["table"] for d in datasets}, out.parent / CSV_NAME
        )
    return out
