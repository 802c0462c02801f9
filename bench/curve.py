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
SCRATCH = "scratch"
CSV = "curve.csv"
LEVELS = (0.9, 0.95)  # "images needed for" these test sequence accuracies


def parse_sizes(text: str) -> list[int | str]:
    """``0,50,100,200,all``: image counts and ``all``, each once, in increasing order (0: no
    training, the starting weights tested as they are: a zero-shot point, with ``init``)."""
    sizes: list[int | str] = []
    for item in (t.strip() for t in text.split(",") if t.strip()):
        if item == ALL:
            sizes.append(ALL)
            continue
        try:
            size = int(item)
        except ValueError:
            size = 0
        if size < 0 or (size == 0 and item != "0"):
            raise ValueError(f"--sizes {text}: {item!r} is not an image count or 'all'")
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
            if n == 0:
                if not full.get("init"):
                    raise ValueError(
                        "--sizes 0 tests the starting weights untrained: it needs "
                        "--set init=run:<run id> (a pretrained model)"
                    )
                # untrained, a seed changes nothing: the first one
                points.append((0, recipe.with_fixed(epochs=0).spec(seed=seeds[0], fold=fold)))
                continue
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
    """Train every point not trained yet (``out/size-N/``, or ``out/run-<run id>/size-N/`` when
    it starts from a pretrained model; resumable; each an MLflow run tagged ``curve_size`` and
    ``subset``), then write and return the curve table (:func:`curve_table`)."""
    for size, spec in points:
        start = spec.cfg.init.replace(":", "-")
        train_and_record(
            spec,
            dataset,
            out / start / f"size-{size}",
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
    files = sorted([*out.glob("size-*/*-seed*.json"), *out.glob("run-*/size-*/*-seed*.json")])
    if not files:
        raise FileNotFoundError(f"no curve results in {out}")
    rows = []
    for (approach, start, size), group in _groups(files).items():
        correct = [[float(p["correct"]) for p in r["predictions"]] for r in group]
        mean, low, high = bootstrap_mean(correct, outcomes=True)
        rows.append(
            {
                "approach": approach,
                "start": start,
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
    table = pd.DataFrame(rows).sort_values(["approach", "start", "train_images"], ignore_index=True)
    for level in LEVELS:
        needed = images_needed(table, level)
        table[f"images_for_{level:.0%}"] = [
            needed[k] for k in zip(table.approach, table.start, strict=True)
        ]
    return table


def start_of(record: dict[str, Any]) -> str:
    """Where a point's weights started: ``scratch`` (the approach's initialisation) or the
    ``init`` setting (``run:<id>``, a pretrained model)."""
    return record["hparams"].get("init") or SCRATCH


def _groups(files: list[Path]) -> dict[tuple[str, str, int], list[dict[str, Any]]]:
    """Results by approach, start and size (read from their ``size-N`` folder: a zero-shot
    point trained on none of its split's training images)."""
    groups: dict[tuple[str, str, int], list[dict[str, Any]]] = {}
    for file in files:
        record = json.loads(file.read_text())
        size = int(file.parent.name.removeprefix("size-"))
        groups.setdefault((record["approach"], start_of(record), size), []).append(record)
    return groups


def images_needed(table: pd.DataFrame, level: float) -> dict[tuple[str, str], float]:
    """Per approach and start the fewest training images whose pooled accuracy reaches
    ``level`` (NaN when no size does)."""
    reached = table[table.test_seq_acc >= level]
    needed = reached.groupby(["approach", "start"]).train_images.min()
    return {
        key: float(needed.get(key, np.nan)) for key in zip(table.approach, table.start, strict=True)
    }
