"""Learning curves: each approach with its source's recipe trained on nested subsets of the
training images, tested on the same held-out images, the optimizer steps of the full-size recipe
held (to within one epoch) so that a small subset is not also a short training."""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.data import Dataset
from bench.report.stats import bootstrap_mean
from bench.results import train_and_record
from bench.spec import Recipe, RunSpec
from bench.training.trainer import epoch_batches, run_data

ALL = "all"
CSV = "curve.csv"
LEVELS = (0.9, 0.95)  # "images needed for" these test sequence accuracies


def parse_sizes(text: str) -> list[int | str]:
    """``50,100,200,all``: positive image counts and ``all``, each once, in increasing order."""
    sizes: list[int | str] = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        if item == ALL:
            sizes.append(ALL)
            continue
        try:
            size = int(item)
        except ValueError:
            size = 0
        if size < 1:
            raise ValueError(f"--sizes {text}: {item!r} is not a positive image count or 'all'")
        sizes.append(size)
    if not sizes or len(set(sizes)) < len(sizes):
        raise ValueError(f"--sizes {text}: give each size once, e.g. 50,100,200,all")
    return sorted(sizes, key=lambda s: math.inf if s == ALL else s)


def steps_per_epoch(images: int, hparams: dict[str, Any]) -> int:
    """Optimizer steps of one epoch over ``images`` (as the trainer batches them)."""
    return epoch_batches(images, int(hparams["batch_size"]), bool(hparams["drop_last"]))[2]


def training_images(recipe: Recipe, dataset: Dataset, fold: int = 0) -> int:
    """How many images the recipe's split trains on at full size."""
    _, split, _ = run_data(recipe.spec(fold=fold), dataset)
    return len(split.train)


def curve_specs(
    recipe: Recipe, dataset: Dataset, sizes: Sequence[int | str], seeds: Sequence[int]
) -> list[tuple[int, RunSpec]]:
    """(size, spec) of every point: per size, seed and fold, the recipe on that many training
    images (``train_size``) with as many epochs as keep the full recipe's optimizer steps (with a
    time budget the epochs are a cap, and the budget is what is held)."""
    full = recipe.hparams()
    points = []
    for fold in recipe.folds():
        n_full = training_images(recipe, dataset, fold)
        steps = int(full["epochs"]) * steps_per_epoch(n_full, full)
        for size in sizes:
            n = n_full if size == ALL else int(size)
            if n > n_full:
                raise ValueError(
                    f"--sizes: {n} images is more than {recipe.approach}'s training part "
                    f"({n_full} images)"
                )
            epochs = math.ceil(steps / steps_per_epoch(n, full))
            point = recipe.with_fixed(train_size=0 if size == ALL else n, epochs=epochs)
            points += [(n, point.spec(seed=seed, fold=fold)) for seed in seeds]
    return points


def run_curve(
    points: Sequence[tuple[int, RunSpec]],
    dataset: Dataset,
    out: Path,
    experiment: str = "curves",
    progress: bool = True,
) -> pd.DataFrame:
    """Train every point not trained yet (``out/size-N/``, resumable; each an MLflow run tagged
    ``curve_size`` and ``subset``), then write and return the curve table (:func:`curve_table`)."""
    for size, spec in points:
        train_and_record(
            spec,
            dataset,
            out / f"size-{size}",
            experiment=experiment,
            suite="curve",
            progress=progress,
            tags={"curve_size": size, "subset": f"nested, split seed {spec.split_seed}"},
        )
    table = curve_table(out)
    table.to_csv(out / CSV, index=False)
    return table


def curve_table(out: Path) -> pd.DataFrame:
    """Per approach and size: runs, training images, epochs and steps, the test sequence accuracy
    pooled over the runs with a 95% interval (runs, then images resampled), the CER; and per
    approach the fewest images whose accuracy reaches each of :data:`LEVELS`."""
    records = [json.loads(p.read_text()) for p in sorted(out.glob("size-*/*-seed*.json"))]
    if not records:
        raise FileNotFoundError(f"no curve results in {out}")
    rows = []
    for (approach, size), group in _groups(records).items():
        correct = [[float(p["correct"]) for p in r["predictions"]] for r in group]
        mean, low, high = bootstrap_mean(correct, outcomes=True)
        rows.append(
            {
                "approach": approach,
                "train_images": size,
                "runs": len(group),
                "seeds": " ".join(str(s) for s in sorted({r["seed"] for r in group})),
                "epochs": float(np.mean([r["epochs"] for r in group])),
                "steps": float(np.mean([r["steps"] for r in group])),
                "test_seq_acc": mean,
                "test_seq_acc_low": low,
                "test_seq_acc_high": high,
                "test_cer": float(np.mean([r["test_cer"] for r in group])),
            }
        )
    table = pd.DataFrame(rows).sort_values(["approach", "train_images"], ignore_index=True)
    for level in LEVELS:
        table[f"images_for_{level:.0%}"] = table.approach.map(images_needed(table, level))
    return table


def _groups(records: list[dict[str, Any]]) -> dict[tuple[str, int], list[dict[str, Any]]]:
    groups: dict[tuple[str, int], list[dict[str, Any]]] = {}
    for record in records:
        groups.setdefault((record["approach"], int(record["n_train"])), []).append(record)
    return groups


def images_needed(table: pd.DataFrame, level: float) -> dict[str, float]:
    """Per approach the fewest training images whose pooled accuracy reaches ``level`` (NaN when
    no size does)."""
    reached = table[table.test_seq_acc >= level]
    needed = reached.groupby("approach").train_images.min()
    return {a: float(needed.get(a, np.nan)) for a in table.approach.unique()}
