"""The robustness track: models logged by MLflow runs read corrupted copies of their own test
images (:mod:`bench.data.corruptions`), without retraining. Each run's readings are logged to it
(so a second evaluation reads them back instead of reading again); the tables pool a model's runs
(seeds) with intervals and say which differences are significant."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import torch
from scipy import stats
from tqdm.auto import tqdm

from bench.data.corruptions import CLEAN, CORRUPTIONS, VERSION, corrupted_files
from bench.metrics import per_image
from bench.recognizer import codec_from_metadata, decode_images
from bench.report.stats import bootstrap_mean, bootstrap_ratio, holm, mcnemar_exact
from bench.spec import resolve_hparams
from bench.tracking.models import logged_weights
from bench.tracking.query import predictions, run_table
from bench.tracking.record import log_run_table

ALPHA = 0.05
TABLE = f"robustness/v{VERSION}.json"  # the run's readings of corrupted images, one row an image
MILD = (1, 2, 3)  # the severities of the headline mean


@dataclass(frozen=True)
class Readings:
    """One run's readings: ``file, label, corruption, severity, prediction`` (``clean``,
    severity 0: the images as they are)."""

    run_id: str
    model: str  # :func:`model_name`
    seed: int
    frame: pd.DataFrame


MEASURED = {"mean", "std", "init"}  # set from the data, or said by ", pretrained"


def model_name(approach: str, hparams: dict[str, Any]) -> str:
    """The approach, ", pretrained" when it started from another run's weights, and the
    hyperparameters it changed from the approach's defaults: ``ce-crnn (rotate=10.0)``."""
    defaults = resolve_hparams(approach, {})
    changed = [f"{k}={v}" for k, v in hparams.items() if k not in MEASURED and defaults.get(k) != v]
    name = approach + (", pretrained" if hparams.get("init") else "")
    return name + (f" ({', '.join(changed)})" if changed else "")


def test_files(run_ids: Sequence[str]) -> list[str]:
    """The test images every run was tested on; a ``ValueError`` naming the run whose differ
    (comparisons pair the same images)."""
    files = None
    for run_id in run_ids:
        mine = sorted(predictions(run_id).file.astype(str))
        if files is not None and mine != files:
            raise ValueError(
                f"run {run_id} was tested on other images than run {run_ids[0]}: evaluate runs "
                "of one dataset and split together"
            )
        files = mine
    return files or []


def evaluate(
    run_id: str,
    corruptions: Sequence[str],
    severities: Sequence[int],
    data_dir: str | None = None,
    progress: bool = False,
    batch: int = 256,
) -> Readings:
    """The run's model on its clean test images and on each corruption at each severity; what
    the run has logged already is read back, what is new is read and logged with the rest."""
    from bench.data import load_dataset

    logged = logged_weights(run_id)
    done = run_table(run_id, TABLE)
    wanted = [(CLEAN, 0), *((c, s) for c in corruptions for s in severities)]
    have = set() if done is None else set(zip(done.corruption, done.severity, strict=True))
    todo = [key for key in wanted if key not in have]
    frame = done if done is not None else pd.DataFrame()
    if todo:
        dataset = load_dataset(logged.tags["dataset"], data_dir=data_dir)
        root, fingerprint = dataset.source.root, dataset.source.fingerprint
        test = predictions(run_id)
        recognizer, codec = logged.recognizer(), codec_from_metadata(logged.meta)
        parts = [frame]
        label = f"{logged.meta['approach']} {run_id[:8]}"
        for corruption, severity in tqdm(todo, desc=label, leave=False, disable=not progress):
            paths = (
                [root / f for f in test.file]
                if corruption == CLEAN
                else corrupted_files(root, list(test.file), fingerprint, corruption, severity)
            )
            images = torch.from_numpy(decode_images(logged.meta, paths))
            read: list[str] = []
            with torch.inference_mode():
                for start in range(0, len(images), batch):
                    read += codec.decode(recognizer(images[start : start + batch]))
            parts.append(
                pd.DataFrame(
                    {
                        "file": test.file.astype(str),
                        "label": test.label.astype(str),
                        "corruption": corruption,
                        "severity": severity,
                        "prediction": read,
                    }
                )
            )
        frame = pd.concat(parts, ignore_index=True)
        # MLflow appends to a table the run has: the new readings alone
        log_run_table(run_id, pd.concat(parts[1:]), TABLE, run_metrics(frame))
    frame = frame.astype({"file": str, "label": str, "prediction": str, "severity": int})
    keep = frame.set_index(["corruption", "severity"]).index.isin(wanted)
    model = model_name(logged.meta["approach"], logged.meta["hparams"])
    return Readings(run_id, model, int(logged.tags.get("seed", 0)), frame[keep])


def run_metrics(frame: pd.DataFrame) -> dict[str, float]:
    """The run's clean accuracy and its mean accuracy over corruptions at severities 1-3 and
    1-5 (the mean of each corruption and severity's accuracy), as MLflow metrics."""
    correct = frame.prediction.astype(str) == frame.label.astype(str)
    accuracy = correct.groupby([frame.corruption, frame.severity]).mean()
    corrupted = accuracy.drop(CLEAN, level=0, errors="ignore")
    metrics = {"robust_clean_seq_acc": float(accuracy.get((CLEAN, 0), np.nan))}
    for name, levels in (("s1_3", MILD), ("s1_5", (1, 2, 3, 4, 5))):
        chosen = corrupted[corrupted.index.get_level_values(1).isin(levels)]
        if len(chosen):
            metrics[f"robust_seq_acc_{name}"] = float(chosen.mean())
    return metrics


def scored(readings: Sequence[Readings]) -> pd.DataFrame:
    """Every reading of every run with its per-image counts (``correct``, ``distance``,
    ``length``) and its run's model, seed and id."""
    frames = [
        r.frame.assign(model=r.model, seed=r.seed, run=r.run_id).reset_index(drop=True)
        for r in readings
    ]
    frame = pd.concat(frames, ignore_index=True)
    return pd.concat([frame, per_image(frame)[["correct", "distance", "length"]]], axis=1)


def sign_flip_p(differences: np.ndarray, resamples: int = 9999) -> float:
    """Two-sided p-value of a paired permutation test that the mean of ``differences`` is 0:
    each difference's sign flipped at random (scipy's ``permutation_test``, seeded)."""
    if not np.any(differences):
        return 1.0
    return float(
        stats.permutation_test(
            (differences,),
            lambda x, axis: np.mean(x, axis=axis),
            permutation_type="samples",
            vectorized=True,
            n_resamples=resamples,
            random_state=0,
        ).pvalue
    )


def corruption_table(readings: Sequence[Readings]) -> pd.DataFrame:
    """Per model, corruption and severity: accuracy pooled over the model's runs with a 95%
    interval (runs, then images resampled), CER, the change from clean, and the exact McNemar
    test of corrupted against clean on the same images (pairs pooled over runs), Holm-adjusted
    over every row."""
    frame = scored(readings)
    clean = frame[frame.corruption == CLEAN].set_index(["run", "file"]).correct
    rows = []
    for (model, corruption, severity), part in frame.groupby(
        ["model", "corruption", "severity"], sort=False
    ):
        runs = [g for _, g in part.groupby("run")]
        acc, low, high = bootstrap_ratio([g.correct.to_numpy() for g in runs])
        was = clean.reindex(pd.MultiIndex.from_frame(part[["run", "file"]])).to_numpy()
        now = part.correct.to_numpy()
        lost, gained = int(((was == 1) & (now == 0)).sum()), int(((was == 0) & (now == 1)).sum())
        rows.append(
            {
                "model": model,
                "corruption": corruption,
                "severity": severity,
                "runs": len(runs),
                "seeds": " ".join(str(s) for s in sorted(part.seed.unique())),
                "images": len(part),
                "seq_acc": acc,
                "seq_acc_low": low,
                "seq_acc_high": high,
                "cer": part.distance.sum() / part.length.sum(),
                "change": acc - float(was.mean()),
                "lost": lost,
                "gained": gained,
                "p": mcnemar_exact(lost, gained) if corruption != CLEAN else np.nan,
            }
        )
    order = {name: i for i, name in enumerate((CLEAN, *CORRUPTIONS))}  # the models as given
    table = pd.DataFrame(rows).sort_values(
        ["corruption", "severity"], key=lambda c: c.map(order) if c.name == "corruption" else c
    )
    models = list(dict.fromkeys(r.model for r in readings))
    table = table.sort_values("model", key=lambda c: c.map(models.index), kind="stable")
    table = table.reset_index(drop=True)
    tested = table.corruption != CLEAN
    table["p_holm"] = np.nan
    table.loc[tested, "p_holm"] = holm(table.p[tested].tolist())
    table["significant"] = table.p_holm < ALPHA
    return table


def summary_table(readings: Sequence[Readings], severities: Sequence[int] = MILD) -> pd.DataFrame:
    """Per model: clean accuracy, the mean accuracy over corruptions at ``severities`` and over
    all, relative to clean (each with a 95% interval: runs, then images resampled, an image
    carrying all its corrupted copies), and the difference from the model with the highest mean
    at ``severities`` (at every severity measured when none of them was: ``compared_on``),
    paired by seed and image, with a 95% bootstrap interval and a sign-flip permutation test of
    the mean over images of each image's difference averaged over seeds, Holm-adjusted."""
    frame = scored(readings)
    corrupted = frame[frame.corruption != CLEAN]
    mild = corrupted[corrupted.severity.isin(severities)]
    basis, key = (mild, "mild") if len(mild) else (corrupted, "all")
    levels = sorted(int(s) for s in basis.severity.unique())
    # per run and image: the share of its corrupted copies read right
    per_image = basis.groupby(["model", "seed", "run", "file"]).correct.mean()
    rows = []
    for model, part in frame.groupby("model", sort=False):
        row: dict[str, object] = {"model": model, "runs": part.run.nunique()}
        for name, chosen in (
            ("clean", part[part.corruption == CLEAN]),
            ("mild", mild[mild.model == model]),
            ("all", corrupted[corrupted.model == model]),
        ):
            numerators = chosen.groupby(["run", "file"]).correct.sum()
            counts = chosen.groupby(["run", "file"]).correct.size()
            groups = numerators.index.get_level_values("run")
            acc, low, high = bootstrap_ratio(
                [numerators[groups == r].to_numpy() for r in groups.unique()],
                [counts[groups == r].to_numpy() for r in groups.unique()],
            )
            row |= {f"{name}_seq_acc": acc, f"{name}_low": low, f"{name}_high": high}
        clean = row["clean_seq_acc"] or np.nan  # a model that reads no clean image: no ratio
        row["relative_mild"] = row["mild_seq_acc"] / clean
        row["relative_all"] = row["all_seq_acc"] / clean
        rows.append(row)
    table = pd.DataFrame(rows).sort_values(f"{key}_seq_acc", ascending=False, ignore_index=True)
    table["compared_on"] = "severities " + ", ".join(map(str, levels))
    leader = table.model.iloc[0]
    best = per_image.loc[leader].droplevel("run")
    p_values = []
    for model in table.model:
        mine = per_image.loc[model].droplevel("run")
        both = pd.concat({"leader": best, "other": mine}, axis=1).dropna()
        diff = both.other - both.leader
        if model == leader or both.empty:
            p_values.append(np.nan)
            continue
        groups = [g.to_numpy() for _, g in diff.groupby(level="seed")]
        point, low, high = bootstrap_mean(groups)
        p = sign_flip_p(diff.groupby(level="file").mean().to_numpy())
        table.loc[table.model == model, ["diff", "diff_low", "diff_high"]] = point, low, high
        p_values.append(p)
    table["p"] = p_values
    tested = table.p.notna()
    table["p_holm"] = np.nan
    if tested.any():
        table.loc[tested, "p_holm"] = holm(table.p[tested].tolist())
    table["significant"] = table.p_holm < ALPHA
    return table
