"""The leaderboard: per approach its pooled test metrics with bootstrap intervals, costs and
times to threshold (``leaderboard.csv`` beside the page), the best value of each column, and the
leader's paired tests against every other approach."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.metrics import per_image
from bench.report.data import Comparison, metric
from bench.report.stats import (
    bootstrap_mean,
    bootstrap_ratio,
    first_epoch_reaching,
    first_time_reaching,
    holm,
    mcnemar_exact,
)

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
    """The number of distinct test images (one split's test part, or every fold's); for a
    cross-validated approach its per-fold test sequence accuracy (mean over seeds) too: the
    folds, and each fold's accuracy with the spread."""
    folds = group[group["tags.fold"].astype(str) != ""]
    if folds.empty:
        n_test = pd.to_numeric(
            group.get("params.data.n_test", pd.Series(dtype=float)), errors="coerce"
        )
        return {
            "folds": 0,
            "images": n_test.iloc[0] if len(n_test) else math.nan,
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
