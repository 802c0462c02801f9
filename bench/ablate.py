"""Ablations: one approach with one setting varied over values, on the same split and seeds.

Each run is a ``compare`` run (tracked in MLflow, a result file under ``OUT/KEY=VALUE/``); the
table gives each variant's accuracy with the leaderboard's two-level interval (seeds, then each
seed's test images resampled) and pairs every variant with the first on the same test images and
seeds: the accuracy difference with a bootstrap interval that resamples images within seeds, an
exact McNemar test on the discordant images pooled over seeds, and Welch's t-test on the seeds'
accuracies (the images are not the only randomness: a run's training noise moves its accuracy
too).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from bench.data import Dataset
from bench.report.stats import (
    bootstrap_difference,
    bootstrap_mean,
    bootstrap_ratio,
    holm,
    mcnemar_exact,
)
from bench.results import train_and_record
from bench.spec import RunSpec


def variant_folder(out: Path, key: str, value: Any) -> Path:
    return out / f"{key}={value}"


def run_ablation(
    specs: Sequence[tuple[Any, RunSpec]],
    dataset: Dataset,
    key: str,
    out: Path,
    experiment: str | None = None,
    progress: bool = True,
) -> pd.DataFrame:
    """Train every (value, spec) not trained yet, then tabulate (see :func:`ablation_table`)."""
    records: dict[Any, list[dict[str, Any]]] = {}
    for value, spec in specs:
        path = train_and_record(
            spec,
            dataset,
            variant_folder(out, key, value),
            experiment=experiment,
            suite=f"ablate {key}",
            progress=progress,
        )
        records.setdefault(value, []).append(json.loads(path.read_text()))
    table = ablation_table(key, records)
    table.to_csv(out / "ablation.csv", index=False)
    (out / "ablation.md").write_text(markdown(table))
    return table


def correct_by_file(record: dict[str, Any]) -> pd.Series:
    rows = pd.DataFrame(record["predictions"])
    return rows.set_index("file").correct.astype(float).sort_index()


def ablation_table(key: str, records: dict[Any, list[dict[str, Any]]]) -> pd.DataFrame:
    """One row per value: mean test sequence accuracy and CER over seeds, the accuracy's 95%
    interval from the leaderboard's two-level bootstrap
    (:func:`~bench.report.stats.bootstrap_ratio`: the seeds drawn, then each drawn seed's test
    images, so it covers the spread between seeds as well as the images' sampling; each seed's
    accuracy is listed beside it), and against the first value (the reference) the paired
    difference, its interval, the discordant images and McNemar's exact p (Holm-adjusted over
    the variants), and Welch's p over the seeds' accuracies. Variants tested on other images
    (another split) are compared on the images both tested (``paired_images``), or unpaired
    when they share none."""
    values = list(records)
    reference = {r["seed"]: correct_by_file(r) for r in records[values[0]]}
    rows = []
    for value in values:
        mine = {r["seed"]: correct_by_file(r) for r in records[value]}
        acc, low, high = bootstrap_ratio(list(mine.values()))
        seeds = sorted(set(mine) & set(reference))
        shared = [mine[s].index.intersection(reference[s].index) for s in seeds]
        diffs = [mine[s][i] - reference[s][i] for s, i in zip(seeds, shared, strict=True)]
        if any(len(i) for i in shared):  # on the images both tested (all, unless splits differ)
            diff, d_low, d_high = bootstrap_mean([d for d in diffs if len(d)])
        elif seeds:  # no image in common: an unpaired difference
            diff, d_low, d_high = bootstrap_difference(
                [mine[s] for s in seeds], [reference[s] for s in seeds]
            )
        else:
            diff, d_low, d_high = (np.nan,) * 3
        gained = sum(int((d > 0).sum()) for d in diffs)
        lost = sum(int((d < 0).sum()) for d in diffs)
        rows.append(
            {
                key: value,
                "seeds": len(mine),
                "test_seq_acc": acc,
                "acc_low": low,
                "acc_high": high,
                "test_cer": float(np.mean([r["test_cer"] for r in records[value]])),
                "per_seed": " ".join(
                    f"{r['test_seq_acc']:.1%}"
                    for r in sorted(records[value], key=itemgetter("seed"))
                ),
                "acc_diff": diff,
                "acc_diff_low": d_low,
                "acc_diff_high": d_high,
                "gained": gained,
                "lost": lost,
                "paired_images": sum(len(d) for d in diffs),
                "test_images": sum(len(m) for m in mine.values()),
                "p": mcnemar_exact(gained, lost) if value != values[0] else np.nan,
                "p_seeds": welch_p(records[values[0]], records[value])
                if value != values[0]
                else np.nan,
            }
        )
    table = pd.DataFrame(rows)
    tested = table.p.notna()
    if tested.any():
        table.loc[tested, "p_holm"] = holm(table.p[tested].tolist())
    return table


def welch_p(first: list[dict[str, Any]], second: list[dict[str, Any]]) -> float:
    """Welch's two-sided t-test on the two sets of per-seed accuracies (NaN below 2 seeds a side
    or without any spread)."""
    a, b = ([r["test_seq_acc"] for r in records] for records in (first, second))
    if min(len(a), len(b)) < 2 or np.var(a) + np.var(b) == 0:
        return np.nan
    return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def markdown(table: pd.DataFrame) -> str:
    """The table for a README: percentages, intervals, significance in words."""
    key = table.columns[0]
    lines = [
        f"| {key} | seeds | test seq acc (95% CI) | per seed | CER | vs first (95% CI) | "
        "images gained / lost | McNemar p (Holm) | Welch p over seeds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in table.to_dict("records"):
        paired = (
            "reference"
            if pd.isna(row["p"])
            else f"{row['acc_diff']:+.2%} ({row['acc_diff_low']:+.2%} to "
            f"{row['acc_diff_high']:+.2%})"
        )
        p = "" if pd.isna(row["p"]) else f"{row.get('p_holm', row['p']):.3g}"
        lost = "" if pd.isna(row["p"]) else f"{row['gained']} / {row['lost']}"
        if lost and row.get("paired_images", 0) < row.get("test_images", 0):  # other images
            paired += f" on {row['paired_images']} shared" if row["paired_images"] else " unpaired"
            lost += f" of {row['paired_images']} shared"
        welch = "" if pd.isna(row.get("p_seeds", np.nan)) else f"{row['p_seeds']:.3g}"
        lines.append(
            f"| {row[key]} | {row['seeds']} | {row['test_seq_acc']:.2%} ({row['acc_low']:.2%} "
            f"to {row['acc_high']:.2%}) | {row['per_seed']} | {row['test_cer']:.2%} | {paired} | "
            f"{lost} | {p} | {welch} |"
        )
    return "\n".join(lines) + "\n"
