"""From a :class:`~bench.report.data.Comparison` to the sections of the HTML report."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import itertools
import math
import shlex
import warnings
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd

from bench.hparams import format_duration as duration
from bench.metrics import GAP, confusion_frame, per_image
from bench.report import figures
from bench.report.data import Comparison, load_comparison
from bench.report.stats import (
    bootstrap_mean,
    bootstrap_ratio,
    first_epoch_reaching,
    first_time_reaching,
    holm,
    mcnemar_exact,
)
from bench.tracking import metric_name, tracking_uri

ALPHA = 0.05
CSV_NAME = "leaderboard.csv"  # beside the HTML page
METRICS = [
    ("seq_acc", "test_seq_acc", True),
    ("char_acc", "test_char_acc", True),
    ("cer", "test_cer", False),
]
COSTS = [
    ("params", "params"),
    ("flops", "flops"),
    ("train_seconds", "train_seconds"),
    ("infer_img_per_s", "infer_img_per_s"),
    ("latency_ms", "latency_ms_p50"),
]


def metric(runs: pd.DataFrame, name: str) -> pd.Series:
    """A logged metric of every run (by its key; MLflow's name may carry a group prefix)."""
    column = f"metrics.{metric_name(name)}"
    return runs[column] if column in runs else pd.Series(np.nan, index=runs.index)


# each metric as a ratio of per-image sums (bench.metrics.per_image): numerator, denominator
RATIOS = {
    "seq_acc": ("correct", None),
    "char_acc": ("right", "positions"),
    "cer": ("distance", "length"),
}
TIME_THRESHOLDS = (0.5, 0.9)
EPOCH_THRESHOLDS = (0.9, 0.95)
# the leaderboard.csv columns: fractions and seconds as numbers, intervals as their bounds
CSV_COLUMNS = [
    "dataset",
    "approach",
    "n",
    "seeds",
    "folds",
    "images",
    "per_seed",
    "per_fold",
    "fold_min",
    "fold_max",
    *[f"{m}{end}" for m, _, _ in METRICS for end in ("", "_low", "_high")],
    *[c for c, _ in COSTS],
    "epochs",
    *[f"{k}_{int(t * 100)}" for t in EPOCH_THRESHOLDS for k in ("epochs", "reached")],
    *[f"{k}_{int(t * 100)}" for t in TIME_THRESHOLDS for k in ("time", "time_reached")],
    "timed",
]


def image_counts(comparison: Comparison, run_id: str) -> pd.DataFrame | None:
    """The run's per-image counts (None when it logged no ``predictions.csv``)."""
    try:
        return per_image(comparison.predictions(run_id))
    except Exception:  # an older or damaged run: no interval for its approach
        return None


def replicate_order(runs: pd.DataFrame) -> pd.DataFrame:
    """Runs sorted by seed, then fold, as numbers (tags are text: "10" after "9")."""
    return runs.sort_values(
        ["tags.seed", "tags.fold"], key=lambda tags: pd.to_numeric(tags, errors="coerce")
    )


def fold_figures(group: pd.DataFrame) -> dict[str, Any]:
    """A cross-validated approach's per-fold test sequence accuracy (mean over seeds): the folds,
    the number of distinct test images, and each fold's accuracy with the spread."""
    folds = group[group["tags.fold"].astype(str) != ""]
    if folds.empty:
        return {
            "folds": 0,
            "images": math.nan,
            "per_fold": "",
            "fold_min": math.nan,
            "fold_max": math.nan,
        }
    acc = metric(folds, "test_seq_acc").groupby(folds["tags.fold"].astype(int)).mean()
    n_test = pd.to_numeric(folds.get("params.data.n_test"), errors="coerce")
    images = n_test.groupby(folds["tags.fold"].astype(int)).first().sum()
    return {
        "folds": len(acc),
        "images": images,
        "per_fold": " ".join(f"{v:.1%}" for v in acc),
        "fold_min": acc.min(),
        "fold_max": acc.max(),
    }


def leaderboard(comparison: Comparison, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per approach: test metrics pooled over its runs' test images (seeds; with k-fold
    cross-validation, every fold of every seed: each image once per seed) with a 95% bootstrap
    interval (runs, then each run's test images resampled:
    :func:`~bench.report.stats.bootstrap_ratio`, inside [0, 100%]), the per-fold spread, costs,
    epochs to 90/95% and training seconds to 50/90% validation sequence accuracy (mean over the
    runs that reached it, with how many did)."""
    rows = []
    for approach, group in runs.groupby("tags.approach"):
        group = replicate_order(group)
        row: dict[str, Any] = {
            "approach": approach,
            "n": len(group),
            "seeds": ", ".join(dict.fromkeys(group["tags.seed"].astype(str))),
            "per_seed": " ".join(
                f"{v:.1%}"
                for v in metric(group, "test_seq_acc")
                .groupby(group["tags.seed"], sort=False)
                .mean()
            ),
            **fold_figures(group),
        }
        counts = [image_counts(comparison, r) for r in group.run_id]
        for short, name, _ in METRICS:
            row[short] = metric(group, name).mean()
            low = high = math.nan
            if all(c is not None and len(c) for c in counts):
                num, den = RATIOS[short]
                row[short], low, high = bootstrap_ratio(
                    [c[num] for c in counts], None if den is None else [c[den] for c in counts]
                )
            row[f"{short}_low"], row[f"{short}_high"] = low, high
        for short, name in COSTS:
            row[short] = metric(group, name).mean()
        histories = [comparison.history(r) for r in group.run_id]
        for threshold in EPOCH_THRESHOLDS:
            reached = [first_epoch_reaching(h.val_seq_acc.tolist(), threshold) for h in histories]
            row[f"epochs_{int(threshold * 100)}"] = nan_mean(reached)
            row[f"reached_{int(threshold * 100)}"] = sum(not math.isnan(e) for e in reached)
        timed = [h for h in histories if len(h) and h.elapsed.notna().all()]
        row["timed"] = len(timed)
        for threshold in TIME_THRESHOLDS:
            times = [first_time_reaching(h.val_seq_acc, h.elapsed, threshold) for h in timed]
            row[f"time_{int(threshold * 100)}"] = nan_mean(times)
            row[f"time_reached_{int(threshold * 100)}"] = sum(not math.isnan(t) for t in times)
        row["epochs"] = metric(group, "epochs_run").mean()
        rows.append(row)
    table = pd.DataFrame(rows).sort_values(["seq_acc", "cer"], ascending=[False, True])
    return table.reset_index(drop=True)


def nan_mean(values: list[float]) -> float:
    return float(np.nanmean(values)) if any(not math.isnan(v) for v in values) else math.nan


def leaderboard_csv(tables: dict[tuple[str, str], pd.DataFrame], path: Path) -> Path:
    """The leaderboards' numbers, one row per dataset, suite and approach (fractions, not
    percent strings; each interval as its ``_low``/``_high`` bounds)."""
    frame = pd.concat(
        [table.assign(dataset=d, suite=s) for (d, s), table in tables.items()], ignore_index=True
    )
    frame[["suite", *CSV_COLUMNS]].to_csv(path, index=False)
    return path


HIGHER = {"seq_acc", "char_acc", "infer_img_per_s"}
LOWER = {
    "cer",
    "params",
    "flops",
    "train_seconds",
    "latency_ms",
    "epochs_90",
    "epochs_95",
    "time_50",
    "time_90",
}
EXACT = {"seq_acc", "char_acc", "cer"}  # results: only equal values tie
TIE = 0.01  # costs, times and speeds within 1% of the best tie (a measurement's own noise)


def best_marks(table: pd.DataFrame, equal_budget: bool = False) -> dict[str, list[int]]:
    """Per column, the rows that hold its best value or tie it (for highlighting): equal values
    in the accuracy columns, values within :data:`TIE` of the best in the others. A column where
    every row ties has none, and so has the training time under an equal time budget (every run
    trained as long: the column is no result)."""
    marks = {}
    for column in HIGHER | LOWER:
        values = table[column].dropna()
        if values.empty or (equal_budget and column == "train_seconds"):
            continue
        best = values.max() if column in HIGHER else values.min()
        tolerance = 0.0 if column in EXACT else TIE * abs(best)
        ties = values.index[(values - best).abs() <= tolerance].tolist()
        if len(ties) < len(values):
            marks[column] = ties
    return marks


def paired_tests(comparison: Comparison, runs: pd.DataFrame, leader: str) -> list[dict[str, Any]]:
    """Leader against each other approach on the same test images, run by matching run (seed
    and fold: a cross-validation pairs every image of the dataset once per seed).

    Discordant pairs are pooled over the runs both have; p-values are exact McNemar, adjusted
    with Holm over the comparisons; the accuracy difference has a bootstrap interval that
    resamples the paired images *within* each run (runs are not pooled as independent images).
    """

    def outcomes(approach: str) -> dict[tuple[str, str], pd.Series]:
        rows = runs[runs["tags.approach"] == approach]
        keys = zip(rows["tags.seed"].astype(str), rows["tags.fold"].astype(str), strict=True)
        return {
            key: comparison.predictions(run_id).set_index("file").correct.astype(bool)
            for key, run_id in zip(keys, rows.run_id, strict=True)
        }

    mine = outcomes(leader)
    tests = []
    for other in sorted(set(runs["tags.approach"]) - {leader}):
        theirs = outcomes(other)
        shared = sorted(set(mine) & set(theirs))
        if not shared:
            tests.append({"other": other, "seeds": 0})
            continue
        pairs = [
            pd.concat([mine[k], theirs[k]], axis=1, join="inner", keys=["a", "b"]).sort_index()
            for k in shared
        ]
        leader_only = sum(int((p.a & ~p.b).sum()) for p in pairs)
        other_only = sum(int((~p.a & p.b).sum()) for p in pairs)
        diff, low, high = bootstrap_mean(
            [p.a.astype(float).values - p.b.astype(float).values for p in pairs]
        )
        tests.append(
            {
                "other": other,
                "seeds": len({seed for seed, _ in shared}),
                "runs": len(shared),
                "images": len(set().union(*(p.index for p in pairs))),
                "items": sum(len(p) for p in pairs),
                "leader_only": leader_only,
                "other_only": other_only,
                "p": mcnemar_exact(leader_only, other_only),
                "diff": diff,
                "low": low,
                "high": high,
            }
        )
    testable = [t for t in tests if t["seeds"]]
    for test, adjusted in zip(testable, holm([t["p"] for t in testable]), strict=True):
        test["p_holm"] = adjusted
        test["significant"] = adjusted < ALPHA
        test["verdict"] = (  # the p-values are in their own columns
            f"{leader} reads more images right than {test['other']}: a real difference"
            if adjusted < ALPHA and test["diff"] > 0
            else f"{test['other']} reads more images right than {leader}"
            if adjusted < ALPHA
            else f"no significant difference between {leader} and {test['other']}: these runs "
            "cannot tell them apart"
        )
    return tests


def has_double(label: str) -> bool:
    """A character repeated back to back (CTC must emit a blank between the two)."""
    return any(a == b for a, b in itertools.pairwise(label))


def curves_frame(comparison: Comparison, runs: pd.DataFrame) -> pd.DataFrame:
    frames = []
    replicate = runs["tags.seed"].astype(str) + "/" + runs["tags.fold"].astype(str)
    for approach, seed, run_id in zip(runs["tags.approach"], replicate, runs.run_id, strict=True):
        frames.append(comparison.history(run_id).assign(approach=approach, seed=seed))
    return pd.concat(frames, ignore_index=True)


def error_analysis(
    comparison: Comparison, runs: pd.DataFrame, leader: str, charset: str
) -> dict[str, Any]:
    """Leader's confusions (pooled over seeds), accuracy by slice and position, a gallery."""
    slices, positions = [], []
    for approach, run_id in zip(runs["tags.approach"], runs.run_id, strict=True):
        p = comparison.predictions(run_id)
        doubled = p.label.map(lambda t: has_double(t))
        slices += [
            {
                "approach": approach,
                "slice": "doubled character",
                "seq_acc": p.correct[doubled].mean(),
            },
            {
                "approach": approach,
                "slice": "no doubled character",
                "seq_acc": p.correct[~doubled].mean(),
            },
        ]
        for pos in range(p.label.str.len().max()):
            has = p.label.str.len() > pos
            right = [
                len(pred) > pos and pred[pos] == label[pos]
                for label, pred in zip(p.label[has], p.prediction[has], strict=True)
            ]
            positions.append(
                {"approach": approach, "position": pos + 1, "char_acc": float(np.mean(right))}
            )
    slices_frame = pd.DataFrame(slices)
    leader_runs = runs[runs["tags.approach"] == leader]
    pooled = pd.concat([comparison.predictions(r) for r in leader_runs.run_id])
    counts = confusion_frame(pooled, charset)
    gallery = None
    with contextlib.suppress(Exception):  # an older run may lack the figure
        png = comparison.artifact_bytes(leader_runs.run_id.iloc[0], "misread.png")
        gallery = base64.b64encode(png).decode()
    position_table = (
        pd.DataFrame(positions)
        .groupby(["approach", "position"])
        .char_acc.mean()
        .unstack("position")
    )
    slice_table = slices_frame.groupby(["approach", "slice"]).seq_acc.mean().unstack("slice")
    errors = int(counts.values.sum() - np.trace(counts.values))
    top = [
        (t, r, int(counts.loc[t, r]))
        for t in counts.index
        for r in counts.columns
        if t != r and counts.loc[t, r] > 0
    ]
    return {
        "confusion_svg": figures.confusion_heatmap(counts, f"{leader}: confusions over all seeds"),
        "top_confusions": sorted(top, key=lambda x: -x[2])[:10],
        "slices_panel": figures.slice_bars(slices_frame),
        "slices": slice_table,
        "positions": position_table,
        "gallery": gallery,
        "errors": errors,
        "characters": int(pooled.label.astype(str).str.len().sum()),
        "doubled_share": float(pooled.label.map(lambda t: has_double(t)).mean()),
        "gap": GAP,
    }


IMPORTANCE_TRIALS = 10  # fewer complete trials: the importances come with a caveat


def tuning_section(comparison: Comparison, optuna_storage: str | None) -> list[dict[str, Any]]:
    """Per study: counts, best parameters, optimisation history and parameter importances (with
    a caveat when fewer than :data:`IMPORTANCE_TRIALS` complete trials back them)."""
    sections = []
    for record in comparison.studies.to_dict("records"):
        study_name = record.get("tags.optuna_study")
        trials = comparison.trials[comparison.trials["tags.optuna_study"] == study_name]
        if trials.empty:
            continue
        frame = pd.DataFrame(
            {
                "trial": trials["tags.trial"].astype(int),
                "state": trials.get(
                    "tags.trial_state", pd.Series("unknown", index=trials.index)
                ).fillna("running"),
                "value": metric(trials, "val_cer"),
            }
        )
        best = {
            k.removeprefix("tags.best."): v
            for k, v in record.items()
            if k.startswith("tags.best.") and isinstance(v, str)
        }
        section = {
            "name": study_name,
            "approach": record.get("tags.approach"),
            "budget": budget(record),
            "counts": frame.state.value_counts().to_dict(),
            "best": best,
            "best_cer": record.get(f"metrics.{metric_name('best_val_cer')}"),
            "best_seq_acc": record.get(f"metrics.{metric_name('best_val_seq_acc')}"),
            "history": figures.optimization_history(frame),
            "importances_svg": None,
            "caveat": None,
            "note": None,
        }
        storage = optuna_storage or record.get("params.storage")
        try:
            import optuna

            loaded = optuna.load_study(study_name=study_name, storage=storage)
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # "importances will be equal" with few trials
                values = optuna.importance.get_param_importances(loaded)
            section["importances_svg"] = figures.importances(values) if values else None
            complete = len(
                loaded.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            )
            if values and complete < IMPORTANCE_TRIALS:
                section["caveat"] = (
                    f"Importances computed from {complete} complete "
                    f"trial{'' if complete == 1 else 's'}: with fewer than {IMPORTANCE_TRIALS}, "
                    "they are a rough first look, not a ranking to rely on."
                )
        except Exception as err:  # the storage may be elsewhere or hold too few trials
            section["note"] = f"parameter importances unavailable ({type(err).__name__}: {err})"
        sections.append(section)
    return sections


def budget(study: dict[str, Any]) -> str:
    """ "20 trials of 10 epochs" from a study run's ``trial_epochs`` metric (the epochs of its
    trials' spec)."""
    epochs = study.get(f"metrics.{metric_name('trial_epochs')}")
    each = (
        "the approach's own epochs"
        if epochs is None or pd.isna(epochs)
        else f"{int(epochs)} epoch{'' if int(epochs) == 1 else 's'}"
    )
    return f"{study.get('params.trials')} trials of {each}"


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


def rebuild_commands(runs: pd.DataFrame, built_with: list[str]) -> list[str]:
    """The commands that rebuild the page: with one suite tag on every run, the suite's run then
    its report; otherwise the report command this page was built with."""
    suites = runs.get("tags.suite", pd.Series(None, index=runs.index)).fillna("").astype(str)
    if suites.nunique() == 1 and suites.iloc[0]:
        suite = shlex.quote(suites.iloc[0])
        out = built_with[built_with.index("--out") :]
        return [
            f"python -m bench run --suite {suite}",
            " ".join(["python -m bench report --suite", suite, *map(shlex.quote, out)]),
        ]
    return [" ".join(shlex.quote(a) for a in ["python", "-m", "bench", *built_with])]


def report_arguments(
    out: Path,
    experiments: list[str] | None,
    suite: str | None,
    optuna_storage: str | None,
    ablations: Path | None,
) -> list[str]:
    """``bench report`` arguments equivalent to a :func:`build_report` call."""
    args = ["report"]
    for name in experiments or []:
        args += ["--experiment", name]
    if suite:
        args += ["--suite", suite]
    if optuna_storage:
        args += ["--storage", optuna_storage]
    if ablations is not None:
        args += ["--ablations", relative(Path(ablations))]
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


def ablation_tables(folder: Path | None) -> list[dict[str, Any]]:
    """The tables ``bench ablate`` wrote under ``folder`` (``*/ablation.csv``), by name."""
    if folder is None or not Path(folder).is_dir():
        return []
    tables = []
    for path in sorted(Path(folder).glob("*/ablation.csv")):
        frame = pd.read_csv(path, dtype={"per_seed": str})
        key = frame.columns[0]
        seeds_p = frame.get("p_seeds", pd.Series(np.nan, index=frame.index))  # tables before it
        frame["p_seeds"] = seeds_p.astype(object).where(seeds_p.notna(), None)
        rows = frame.rename(columns={key: "variant"}).to_dict("records")
        tables.append({"name": path.parent.name, "key": key, "rows": rows})
    return tables


def build_report(
    out: Path,
    experiments: list[str] | None = None,
    suite: str | None = None,
    optuna_storage: str | None = None,
    ablations: Path | None = None,
) -> Path:
    """Write the self-contained HTML report of ``experiments`` (optionally one suite) to ``out``
    and its leaderboards' numbers to ``leaderboard.csv`` beside it; with ``ablations``, a folder
    of ``bench ablate`` outputs, a "What matters" section too."""
    comparison = load_comparison(experiments, suite)
    datasets = []
    several = comparison.runs["tags.suite"].nunique() > 1  # e.g. as published, and tuned
    for (dataset, suite_name), runs in comparison.runs.groupby(["tags.dataset", "tags.suite"]):
        table = leaderboard(comparison, runs)
        leader = table.approach.iloc[0]
        charset = str(runs["params.data.charset"].iloc[0])
        curves = curves_frame(comparison, runs)
        equal_time = training_setup(runs)["equal_time"]
        datasets.append(
            {
                "name": f"{dataset}: suite {suite_name}" if several else dataset,
                "dataset": dataset,
                "suite": suite_name,
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
                "errors": error_analysis(comparison, runs, leader, charset),
            }
        )
    built_with = report_arguments(out, experiments, suite, optuna_storage, ablations)
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("bench.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["pct"] = pct
    environment.filters["spct"] = lambda v, d=2: "—" if v is None or pd.isna(v) else f"{v:+.{d}%}"
    environment.filters["num"] = lambda v, d=1: "—" if v is None or pd.isna(v) else f"{v:,.{d}f}"
    environment.filters["si"] = si
    environment.filters["interval"] = interval
    html = environment.get_template("report.html.j2").render(
        title=f"captcha-bench: {suite or ', '.join(comparison.experiments)}",
        generated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        datasets=datasets,
        setup=training_setup(comparison.runs),
        tuning=tuning_section(comparison, optuna_storage),
        failed=comparison.failed,
        ablations=ablation_tables(ablations),
        ablations_dir=str(ablations),
        provenance={**provenance(comparison.runs, built_with), "wall": wall_time(comparison)},
        csv_name=CSV_NAME,
        suite=suite,
        alpha=ALPHA,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    leaderboard_csv(
        {(d["dataset"], d["suite"]): d["table"] for d in datasets}, out.parent / CSV_NAME
    )
    return out


def pct(value: float | None, digits: int = 2) -> str:
    return "—" if value is None or pd.isna(value) else f"{value:.{digits}%}"


def interval(low: float | None, high: float | None, digits: int = 2) -> str:
    """A 95% interval as ``low–high`` in percent (empty when there is none)."""
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return ""
    return f"{pct(low, digits)}–{pct(high, digits)}"


def si(value: float | None) -> str:
    """12_345_678 -> 12.3M."""
    if value is None or pd.isna(value):
        return "—"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}"
