"""What the report says about how its runs were made: the training budget and machines, the data,
environment and code, and the commands that rebuild the page."""

from __future__ import annotations

import shlex
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.hparams import format_duration as duration
from bench.report.data import Comparison
from bench.tracking import tracking_uri


def distinct(runs: pd.DataFrame, column: str) -> list[str]:
    """The column's distinct non-empty values as text, sorted."""
    values = runs.get(column, pd.Series(dtype=str)).dropna().astype(str)
    return sorted(v for v in values.unique() if v)


def training_setup(runs: pd.DataFrame) -> dict[str, Any]:
    """What the top of the report says about how the final runs were trained: their time budget
    (``params.budget``, seconds; absent or 0: none) or else their epochs, and the machine(s)
    (``params.cpu``, ``params.torch_threads``, ``params.device``) the times were measured on."""
    budgets = pd.to_numeric(
        runs.get("params.budget", pd.Series(np.nan, index=runs.index)), errors="coerce"
    ).fillna(0.0)
    epochs = pd.to_numeric(
        runs.get("params.epochs", pd.Series(np.nan, index=runs.index)), errors="coerce"
    )
    by_epochs: dict[str, list[str]] = {}
    for approach, value in zip(runs["tags.approach"], epochs, strict=True):
        text = "? epochs" if pd.isna(value) else f"{int(value)} epoch{'' if value == 1 else 's'}"
        by_epochs.setdefault(text, [])
        if approach not in by_epochs[text]:
            by_epochs[text].append(approach)
    epochs_text = (
        "epochs not recorded"
        if list(by_epochs) == ["? epochs"]
        else next(iter(by_epochs)) + " per run"
        if len(by_epochs) == 1
        else "; ".join(f"{k}: {', '.join(sorted(v))}" for k, v in by_epochs.items())
    )
    equal = budgets.nunique() == 1 and budgets.iloc[0] > 0
    if equal:
        budget = (
            f"equal budget: {duration(budgets.iloc[0])} of training per run (at most {epochs_text})"
        )
    elif (budgets > 0).any():
        shown = ", ".join(duration(b) if b > 0 else "none" for b in sorted(budgets.unique()))
        budget = (
            f"time budgets differ between runs ({shown}): not an equal-time comparison; "
            + epochs_text
        )
    else:
        budget = f"no time budget: {epochs_text}"
    machines = sorted(
        {
            ", ".join(
                text
                for text, known in (
                    (str(cpu), pd.notna(cpu)),
                    (f"{threads} torch threads", pd.notna(threads)),
                    (f"device {device}", pd.notna(device)),
                    (f"{precision} precision", pd.notna(precision)),
                    ("CUDA graphs", str(graphs) == "True"),
                )
                if known
            )
            or "not recorded"
            for cpu, threads, device, precision, graphs in zip(
                *(
                    runs.get(c, pd.Series(None, index=runs.index, dtype=object))
                    for c in (
                        "params.cpu",
                        "params.torch_threads",
                        "params.device",
                        "params.precision",
                        "params.graphs",
                    )
                ),
                strict=True,
            )
        }
    )
    return {"budget": budget, "equal_time": bool(equal), "machines": machines}


SECTION_FOLDERS = ("--ablations", "--curves", "--robustness")  # folders sections read


def rebuild_commands(runs: pd.DataFrame, built_with: list[str]) -> list[str]:
    """The commands that rebuild the page: with one suite tag on every run (suites' final runs,
    not learning-curve points), the suite's run then its report (each with the page's section
    folders, if any); otherwise the report command this page was built with
    (:func:`report_arguments`)."""
    suites = runs.get("tags.suite", pd.Series(None, index=runs.index)).fillna("").astype(str)
    points = runs.get("tags.curve_size", pd.Series(None, index=runs.index)).notna().any()
    if suites.nunique() == 1 and suites.iloc[0] and not points:  # curve points: no suite's
        suite = shlex.quote(suites.iloc[0])
        folders = [  # --ablations, --curves and --robustness DIR: the sections' folders
            arg
            for at, option in enumerate(built_with)
            if option in SECTION_FOLDERS
            for arg in built_with[at : at + 2]
        ]
        tail = [*folders, *built_with[built_with.index("--out") :]]
        return [
            " ".join(["python -m bench run --suite", suite, *map(shlex.quote, folders)]),
            " ".join(["python -m bench report --suite", suite, *map(shlex.quote, tail)]),
        ]
    return [" ".join(shlex.quote(a) for a in ["python", "-m", "bench", *built_with])]


def report_arguments(
    out: Path,
    experiments: list[str] | None,
    suite: str | None,
    optuna_storage: str | None,
    ablations: Path | None,
    curves: Path | None = None,
    robustness: Path | None = None,
    sections_only: bool = False,
) -> list[str]:
    """``bench report`` arguments equivalent to a :func:`build_report` call."""
    args = ["report"]
    for name in experiments or []:
        args += ["--experiment", name]
    if suite:
        args += ["--suite", suite]
    if optuna_storage:
        args += ["--storage", optuna_storage]
    for option, folder in zip(SECTION_FOLDERS, (ablations, curves, robustness), strict=True):
        if folder is not None:
            args += [option, relative(Path(folder))]
    if sections_only:
        args.append("--sections-only")
    return [*args, "--out", relative(out)]


def relative(path: Path) -> str:
    try:
        return str(Path(path).resolve().relative_to(Path.cwd().resolve()))
    except ValueError:
        return str(path)


def wall_time(comparison: Comparison) -> str:
    """The measured span of the suites' runs (first run's start to last run's end, tuning trials
    included) beside the estimate ``run`` printed at their start (each suite's
    ``plan_estimate_s`` tag, summed); "" without."""
    runs = comparison.runs
    if "tags.plan_estimate_s" not in runs:
        return ""
    estimates = pd.to_numeric(runs["tags.plan_estimate_s"], errors="coerce")
    per_suite = estimates.groupby(runs["tags.suite"]).last().dropna()
    if per_suite.empty:
        return ""
    frames = [f for f in (runs, comparison.trials) if not f.empty]
    started = min(f.start_time.min() for f in frames)
    ended = max(f.end_time.max() for f in frames)
    span, estimate = (ended - started).total_seconds(), float(per_suite.sum())
    return (
        f"{duration(span)} measured (first run's start to last run's end; a resumed suite's "
        f"pauses included) against {duration(estimate)} estimated by `run --plan` at its start "
        f"({span / estimate:.2f}x)"
    )


def provenance(runs: pd.DataFrame, built_with: list[str]) -> dict[str, Any]:
    """Data, environment, code and the commands that rebuild the page, over every final run."""
    commits = distinct(runs, "params.git_commit")
    return {
        "fingerprints": distinct(runs, "params.data.fingerprint"),
        "splits": sorted(
            {
                f"{r['tags.dataset']}: {r['params.data.n_train']}/{r['params.data.n_val']}/"
                f"{r['params.data.n_test']} (seed {r['params.data.split_seed']}, "
                f"digest {r['params.data.split_digest']})"
                for _, r in runs.iterrows()
                if "params.data.n_train" in r
            }
        ),
        "devices": distinct(runs, "params.device"),
        "torch": distinct(runs, "params.torch"),
        "timm": distinct(runs, "params.timm"),
        "python": distinct(runs, "params.python"),
        "commits": commits,
        "dirty": any(c.endswith("-dirty") for c in commits),
        "suites": distinct(runs, "tags.suite"),
        "suite_files": sorted(
            {
                f"{r['tags.suite_file']} (sha256 {r['tags.suite_digest']})"
                for _, r in runs.iterrows()
                if isinstance(r.get("tags.suite_file"), str)
            }
        ),
        "tracking_uri": tracking_uri(),
        "runs": runs[
            ["tags.dataset", "tags.approach", "tags.seed", "tags.fold", "run_id"]
        ].values.tolist(),
        "commands": rebuild_commands(runs, built_with),
    }
