"""The model registry's champion: a run's model registered as a new version of
``captcha-bench-<dataset>``; the alias ``@champion`` moves to it only when it reads significantly
more of the same test images than the current champion (exact McNemar on the images one reads and
the other does not, two-sided, at ``alpha``, and more gained than lost), else it is
``@challenger``. The first version is the champion."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from bench.report.data import load_comparison, metric
from bench.report.stats import mcnemar_exact
from bench.tracking.models import alias_run, register_version, registered_version, set_alias
from bench.tracking.query import predictions, run_tags

ALPHA = 0.05
CHAMPION, CHALLENGER = "champion", "challenger"


@dataclass(frozen=True)
class Decision:
    """Where a new version went, against which champion, and the paired test behind it."""

    name: str
    version: str
    alias: str
    champion_run: str | None = None  # the champion it was tested against
    images: int = 0
    gained: int = 0  # read by the new version only
    lost: int = 0  # read by the champion only
    p: float = float("nan")
    already: bool = False  # the run was registered before: nothing new


def registered_name(dataset: str) -> str:
    """``captcha-bench-<dataset>``, with characters MLflow's names do not take replaced."""
    return "captcha-bench-" + "".join(c if c.isalnum() or c in "-_." else "-" for c in dataset)


def paired(new_run: str, old_run: str) -> pd.DataFrame:
    """Whether each run read each test image right, on the images both tested (by file); a
    ``ValueError`` when they did not test the same images."""
    new, old = (predictions(r) for r in (new_run, old_run))
    if set(new.file) != set(old.file):
        raise ValueError(
            f"runs {new_run} and {old_run} were tested on different images: they cannot be "
            "compared (train both on the same dataset and split)"
        )
    both = new.merge(old, on="file", suffixes=("_new", "_old"))
    return pd.DataFrame(
        {
            "new": both.prediction_new.astype(str) == both.label_new.astype(str),
            "old": both.prediction_old.astype(str) == both.label_old.astype(str),
        }
    )


def register(run_id: str, name: str | None = None, alpha: float = ALPHA) -> Decision:
    """Register the run's model (as ``name``, by default :func:`registered_name` of its
    dataset) and give it ``@champion`` or ``@challenger``."""
    if not 0 < alpha < 1:
        raise ValueError(f"--alpha {alpha}: use a level in (0, 1), e.g. 0.05")
    name = name or registered_name(run_tags(run_id).get("dataset", "unknown"))
    if known := registered_version(name, run_id):  # again: the version it already is
        version, aliases = known
        alias = CHAMPION if CHAMPION in aliases else aliases[0] if aliases else CHALLENGER
        return Decision(name, version, alias, already=True)
    current = alias_run(name, CHAMPION)
    if current is None:
        version = register_version(run_id, name)
        set_alias(name, CHAMPION, version, {"promoted": "the first version"})
        return Decision(name, version, CHAMPION)
    outcome = paired(run_id, current[1])  # before registering anything: it may refuse
    version = register_version(run_id, name)
    gained = int((outcome.new & ~outcome.old).sum())
    lost = int((~outcome.new & outcome.old).sum())
    p = mcnemar_exact(gained, lost)
    better = gained > lost and p < alpha
    alias = CHAMPION if better else CHALLENGER
    verdict = "significantly better" if better else "not significantly better"
    set_alias(
        name,
        alias,
        version,
        {
            "against_version": current[0],
            "mcnemar_p": f"{p:.3g}",
            "gained_lost": f"{gained}/{lost} of {len(outcome)} images",
            "verdict": f"{verdict} than version {current[0]} at alpha {alpha}",
        },
    )
    return Decision(name, version, alias, current[1], len(outcome), gained, lost, p)


def suite_candidates(experiment: str, suite: str) -> list[tuple[str, str, str]]:
    """(dataset, approach, run id) per dataset of a suite's finished final runs: the approach
    with the highest mean test sequence accuracy over its runs (seeds, folds), and of its runs
    on the first fold (or the one split) the one with the highest validation sequence accuracy
    (the lowest seed on a tie): the model is chosen without looking at its own test images."""
    runs = load_comparison([experiment], suite).runs
    runs = runs.assign(
        test=metric(runs, "test_seq_acc"),
        val=metric(runs, "val_seq_acc"),
        seed=pd.to_numeric(runs["tags.seed"], errors="coerce"),
    )
    chosen = []
    for dataset, mine in runs.groupby("tags.dataset", sort=True):
        best = mine.groupby("tags.approach").test.mean().idxmax()
        first_fold = mine[(mine["tags.approach"] == best) & mine["tags.fold"].isin(["", "0"])]
        pick = first_fold.sort_values(["val", "seed"], ascending=[False, True]).iloc[0]
        chosen.append((str(dataset), str(best), str(pick.run_id)))
    return chosen


def describe(decision: Decision) -> str:
    """One line on where a registered version went, and why."""
    where = f"models:/{decision.name}@{decision.alias}"
    if decision.already:
        return f"{decision.name} version {decision.version} ({where}) holds this run already"
    if decision.champion_run is None:
        return f"registered {decision.name} version {decision.version} as {where} (the first)"
    return (
        f"registered {decision.name} version {decision.version} as {where}: against the champion "
        f"(run {decision.champion_run}) on {decision.images} test images it reads "
        f"{decision.gained} the champion misses and misses {decision.lost} it reads; exact "
        f"McNemar p = {decision.p:.3g}"
    )
