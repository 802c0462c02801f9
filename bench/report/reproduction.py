"""The reproduction summary at the top of ``results.md``: per approach, dataset and split, the mean
over seeds against what its source reports and the target it is held to.

The sources' figures and the targets are research facts, not code: they are read from
``targets.json`` beside the results (:func:`read_targets`); without it the summary's source,
target and verdict columns are "-".
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from scipy.stats import binomtest

from bench.report.stats import bootstrap_mean

TARGETS_FILE = "targets.json"
HEADER = [
    "| approach | dataset | split | seeds | test seq acc (95% CI) | test CER | source "
    "reports (95% CI) | target | verdict |",
    "|---|---|---|---|---|---|---|---|---|",
]


@dataclass(frozen=True)
class Targets:
    """The contents of a ``targets.json``."""

    min_seeds: int  # a verdict stands on this many training seeds
    metrics: dict[str, dict[str, Any]]  # key -> {"name", "higher_is_better"}
    figures: dict[str, dict[str, Any]]  # approach -> {"metric", "value", "n", "source", "where"}
    targets: dict[tuple[str, str], dict[str, Any]]  # (approach, dataset) -> {"metric", "value"}


def read_targets(folder: Path) -> Targets | None:
    """``folder/targets.json`` (None when there is none); a figure or target of a metric the file
    does not name is an error."""
    path = Path(folder) / TARGETS_FILE
    if not path.is_file():
        return None
    data = json.loads(path.read_text())
    targets = Targets(
        min_seeds=int(data["min_seeds"]),
        metrics=data["metrics"],
        figures=data["source_figures"],
        targets={(t["approach"], t["dataset"]): t for t in data["targets"]},
    )
    for entry in [*targets.figures.values(), *targets.targets.values()]:
        if entry["metric"] not in targets.metrics:
            raise ValueError(
                f"{path}: metric {entry['metric']!r} is not one of its metrics "
                f"({', '.join(targets.metrics)})"
            )
    return targets


def summary_lines(records: list[dict[str, Any]], targets: Targets | None) -> list[str]:
    """Per approach, dataset and split: the mean over seeds with a 95% bootstrap interval (test
    images resampled within seeds, where the records hold their predictions) and, from
    ``targets``, the source's figure with its Wilson interval, the target and a verdict:
    reproduced (target met), inside the source's interval, or below."""
    groups: dict[tuple, list[dict[str, Any]]] = {}
    for record in records:
        key = (record["approach"], record["dataset"], record.get("split", "benchmark"))
        groups.setdefault(key, []).append(record)
    lines = list(HEADER)
    for (approach, dataset, split), group in groups.items():
        source, source_ci = source_cell(targets, approach)
        goal, verdict = target_cells(targets, approach, dataset, group, source_ci)
        lines.append(
            f"| {approach} | {dataset} | {split} | {len(group)} | {accuracy_cell(group)} | "
            f"{mean(group, 'test_cer'):.2%} | {source} | {goal} | {verdict} |"
        )
    return lines


def mean(group: list[dict[str, Any]], metric: str) -> float:
    return float(np.mean([r[metric] for r in group]))


def accuracy_cell(group: list[dict[str, Any]]) -> str:
    """The mean test sequence accuracy, with its interval where every record has predictions."""
    shown = f"{mean(group, 'test_seq_acc'):.2%}"
    if all("predictions" in r for r in group):
        correct = [[float(p["correct"]) for p in r["predictions"]] for r in group]
        _, low, high = bootstrap_mean(correct, outcomes=True)
        shown += f" ({low:.2%} to {high:.2%})"
    return shown


def source_cell(targets: Targets | None, approach: str) -> tuple[str, tuple[str, Any] | None]:
    """What the approach's source reports, with its Wilson interval; and (metric, interval)."""
    if targets is None or approach not in targets.figures:
        return "-", None
    figure = targets.figures[approach]
    metric, value, n = figure["metric"], figure["value"], figure["n"]
    ci = binomtest(round(value * n), n).proportion_ci(method="wilson")
    name = targets.metrics[metric]["name"]
    return f"{name} {value:.2%} of {n} ({ci.low:.2%} to {ci.high:.2%})", (metric, ci)


def target_cells(
    targets: Targets | None,
    approach: str,
    dataset: str,
    group: list[dict[str, Any]],
    source_ci: tuple[str, Any] | None,
) -> tuple[str, str]:
    """The target and the verdict on the group's mean ("-" and "-" without a target)."""
    if targets is None or (approach, dataset) not in targets.targets:
        return "-", "-"
    target = targets.targets[approach, dataset]
    metric, value = target["metric"], target["value"]
    higher = targets.metrics[metric]["higher_is_better"]
    goal = f"{targets.metrics[metric]['name']} {'>=' if higher else '<='} {value:.0%}"
    achieved = mean(group, metric)
    met = achieved >= value if higher else achieved <= value
    inside = source_ci and source_ci[1].low <= mean(group, source_ci[0]) <= source_ci[1].high
    verdict = "reproduced" if met else "inside the source's interval" if inside else "below"
    if len(group) < targets.min_seeds:
        seeds = f"{len(group)} seed{'s' if len(group) > 1 else ''}"
        verdict += f" ({seeds}; {targets.min_seeds} needed)"
    return goal, verdict
