"""From a :class:`~bench.report.data.Comparison` to the sections of the HTML report."""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import itertools
import math
import shlex
import sys
import warnings
from pathlib import Path
from typing import Any

import jinja2
import numpy as np
import pandas as pd

from bench.metrics import GAP, confusion_frame
from bench.report import figures
from bench.report.data import Comparison, load_comparison
from bench.report.stats import (
    first_epoch_reaching,
    holm,
    mcnemar_exact,
    mean_ci,
    paired_bootstrap_diff,
)
from bench.tracking import tracking_uri

ALPHA = 0.05
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
    column = f"metrics.{name}"
    return runs[column] if column in runs else pd.Series(np.nan, index=runs.index)


def leaderboard(comparison: Comparison, runs: pd.DataFrame) -> pd.DataFrame:
    """One row per approach: metrics as mean and 95% CI over seeds, costs, epochs to 90/95%."""
    rows = []
    for approach, group in runs.groupby("tags.approach"):
        row: dict[str, Any] = {
            "approach": approach,
            "n": len(group),
            "seeds": ", ".join(sorted(group["tags.seed"].astype(str))),
        }
        for short, name, _ in METRICS:
            ci = mean_ci(metric(group, name).tolist())
            row[short], row[f"{short}_half"] = ci.mean, ci.half_width
        for short, name in COSTS:
            row[short] = metric(group, name).mean()
        curves = [comparison.history(r)["val_seq_acc"].tolist() for r in group.run_id]
        for threshold in (0.9, 0.95):
            reached = [first_epoch_reaching(c, threshold) for c in curves]
            row[f"epochs_{int(threshold * 100)}"] = (
                np.nanmean(reached) if any(not math.isnan(e) for e in reached) else math.nan
            )
            row[f"reached_{int(threshold * 100)}"] = sum(not math.isnan(e) for e in reached)
        row["epochs"] = metric(group, "epochs_run").mean()
        rows.append(row)
    table = pd.DataFrame(rows).sort_values(["seq_acc", "cer"], ascending=[False, True])
    return table.reset_index(drop=True)


def best_marks(table: pd.DataFrame) -> dict[str, Any]:
    """Which row holds the best value of each column (for highlighting)."""
    higher = {"seq_acc", "char_acc", "infer_img_per_s"}
    lower = {"cer", "params", "flops", "train_seconds", "latency_ms", "epochs_90", "epochs_95"}
    marks = {}
    for column in higher | lower:
        values = table[column].dropna()
        if not values.empty:
            marks[column] = values.idxmax() if column in higher else values.idxmin()
    return marks


def paired_tests(comparison: Comparison, runs: pd.DataFrame, leader: str) -> list[dict[str, Any]]:
    """Leader against each other approach on the same test images, seed by matching seed.

    Discordant pairs are pooled over the seeds both have; p-values are exact McNemar, adjusted
    with Holm over the comparisons; the difference has a paired bootstrap interval.
    """

    def outcomes(approach: str) -> dict[str, pd.Series]:
        rows = runs[runs["tags.approach"] == approach]
        return {
            seed: comparison.predictions(run_id).set_index("file").correct.astype(bool)
            for seed, run_id in zip(rows["tags.seed"], rows.run_id, strict=True)
        }

    mine = outcomes(leader)
    tests = []
    for other in sorted(set(runs["tags.approach"]) - {leader}):
        theirs = outcomes(other)
        seeds = sorted(set(mine) & set(theirs))
        if not seeds:
            tests.append({"other": other, "seeds": 0})
            continue
        a = np.concatenate([mine[s].sort_index().values for s in seeds])
        b = np.concatenate([theirs[s].reindex(mine[s].sort_index().index).values for s in seeds])
        leader_only, other_only = int((a & ~b).sum()), int((~a & b).sum())
        diff, low, high = paired_bootstrap_diff(a, b)
        tests.append(
            {
                "other": other,
                "seeds": len(seeds),
                "items": len(a),
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
        test["verdict"] = (
            f"{leader} reads more images right than {test['other']}: a real difference "
            f"(p = {adjusted:.2g} after Holm)"
            if adjusted < ALPHA and test["diff"] > 0
            else f"{test['other']} reads more images right than {leader}"
            if adjusted < ALPHA
            else f"no significant difference between {leader} and {test['other']} "
            f"(p = {adjusted:.2g}): these runs cannot tell them apart"
        )
    return tests


def has_double(label: str) -> bool:
    """A character repeated back to back (CTC must emit a blank between the two)."""
    return any(a == b for a, b in itertools.pairwise(label))


def curves_frame(comparison: Comparison, runs: pd.DataFrame) -> pd.DataFrame:
    frames = []
    for approach, seed, run_id in zip(
        runs["tags.approach"], runs["tags.seed"], runs.run_id, strict=True
    ):
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
    top = [
        (t, r, int(counts.loc[t, r]))
        for t in counts.index
        for r in counts.columns
        if t != r and counts.loc[t, r] > 0
    ]
    return {
        "confusion_svg": figures.confusion_heatmap(counts, f"{leader}: confusions over all seeds"),
        "top_confusions": sorted(top, key=lambda x: -x[2])[:10],
        "slices_svg": figures.slice_bars(slices_frame),
        "slices": slice_table,
        "positions": position_table,
        "gallery": gallery,
        "doubled_share": float(pooled.label.map(lambda t: has_double(t)).mean()),
        "gap": GAP,
    }


def tuning_section(comparison: Comparison, optuna_storage: str | None) -> list[dict[str, Any]]:
    """Per study: counts, best parameters, optimisation history and parameter importances."""
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
                "value": metric(trials, "val_seq_acc"),
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
            "best_value": record.get("metrics.best_value"),
            "history_svg": figures.optimization_history(frame),
            "importances_svg": None,
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
        except Exception as err:  # the storage may be elsewhere or hold too few trials
            section["note"] = f"parameter importances unavailable ({type(err).__name__}: {err})"
        sections.append(section)
    return sections


def budget(study: dict[str, Any]) -> str:
    """ "20 trials of 10 epochs" from a study run's ``trial_epochs`` metric (the epochs of its
    trials' spec)."""
    epochs = study.get("metrics.trial_epochs")
    each = (
        "the approach's own epochs"
        if epochs is None or pd.isna(epochs)
        else f"{int(epochs)} epoch{'' if int(epochs) == 1 else 's'}"
    )
    return f"{study.get('params.trials')} trials of {each}"


def provenance(comparison: Comparison, runs: pd.DataFrame) -> dict[str, Any]:
    def distinct(column: str) -> list[str]:
        return sorted(str(v) for v in runs.get(column, pd.Series(dtype=str)).dropna().unique())

    return {
        "fingerprints": distinct("params.data.fingerprint"),
        "splits": sorted(
            {
                f"{r['params.data.n_train']}/{r['params.data.n_val']}/"
                f"{r['params.data.n_test']} (seed {r['params.data.split_seed']}, "
                f"digest {r['params.data.split_digest']})"
                for _, r in runs.iterrows()
                if "params.data.n_train" in r
            }
        ),
        "devices": distinct("params.device"),
        "torch": distinct("params.torch"),
        "timm": distinct("params.timm"),
        "python": distinct("params.python"),
        "commits": distinct("params.git_commit"),
        "suites": distinct("tags.suite"),
        "suite_files": sorted(
            {
                f"{r['tags.suite_file']} (sha256 {r['tags.suite_digest']})"
                for _, r in runs.iterrows()
                if isinstance(r.get("tags.suite_file"), str)
            }
        ),
        "tracking_uri": tracking_uri(),
        "runs": runs[["tags.approach", "tags.seed", "run_id"]].values.tolist(),
        "command": " ".join(shlex.quote(a) for a in ["python", "-m", "bench", *sys.argv[1:]])
        if sys.argv[0].endswith(("bench", "__main__.py"))
        else "",
    }


def ablation_tables(folder: Path | None) -> list[dict[str, Any]]:
    """The tables ``bench ablate`` wrote under ``folder`` (``*/ablation.csv``), by name."""
    if folder is None or not Path(folder).is_dir():
        return []
    tables = []
    for path in sorted(Path(folder).glob("*/ablation.csv")):
        frame = pd.read_csv(path, dtype={"per_seed": str})
        key = frame.columns[0]
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
    """Write the self-contained HTML report of ``experiments`` (optionally one suite) to ``out``;
    with ``ablations``, a folder of ``bench ablate`` outputs, a "What matters" section too."""
    comparison = load_comparison(experiments, suite)
    datasets = []
    for dataset, runs in comparison.runs.groupby("tags.dataset"):
        table = leaderboard(comparison, runs)
        leader = table.approach.iloc[0]
        charset = str(runs["params.data.charset"].iloc[0])
        datasets.append(
            {
                "name": dataset,
                "table": table,
                "best": best_marks(table),
                "leader": leader,
                "single_seed": bool((table.n < 2).any()),
                "tests": paired_tests(comparison, runs, leader),
                "cost_svg": figures.cost_scatter(table),
                "curves_svg": figures.learning_curves(curves_frame(comparison, runs)),
                "errors": error_analysis(comparison, runs, leader, charset),
                "provenance": provenance(comparison, runs),
            }
        )
    environment = jinja2.Environment(
        loader=jinja2.PackageLoader("bench.report", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )
    environment.filters["pct"] = lambda v, d=2: "—" if v is None or pd.isna(v) else f"{v:.{d}%}"
    environment.filters["num"] = lambda v, d=1: "—" if v is None or pd.isna(v) else f"{v:,.{d}f}"
    environment.filters["si"] = si
    html = environment.get_template("report.html.j2").render(
        title=f"captcha-bench: {suite or ', '.join(comparison.experiments)}",
        generated=dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        datasets=datasets,
        tuning=tuning_section(comparison, optuna_storage),
        failed=comparison.failed,
        ablations=ablation_tables(ablations),
        ablations_dir=str(ablations),
        suite=suite,
        alpha=ALPHA,
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(html, encoding="utf-8")
    return out


def si(value: float | None) -> str:
    """12_345_678 -> 12.3M."""
    if value is None or pd.isna(value):
        return "—"
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if abs(value) >= size:
            return f"{value / size:.1f}{unit}"
    return f"{value:.0f}"
