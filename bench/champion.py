"""The model registry's champion: a run's model registered as a new version of
``captcha-bench-<dataset>``; the alias ``@champion`` moves to it only when it reads significantly
more of the same test images than the current champion (exact McNemar on the images one reads and
the other does not, two-sided, at ``alpha``, and more gained than lost), else it is
``@challenger``. The first version is the champion."""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from bench.report.stats import mcnemar_exact
from bench.tracking.models import alias_run, register_version, set_alias
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
