"""Reading a comparison out of MLflow: final runs, their curves and predictions, tuning studies."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bench.errors import ReportError
from bench.tracking import METRIC_GROUPS, metric_name, query

HISTORY = ("val_seq_acc", "val_loss", "elapsed_seconds", "epoch_seconds")
GROUPED = [key for keys in METRIC_GROUPS.values() for key in keys]


def training_seconds(history: pd.DataFrame) -> pd.Series:
    """Cumulative training seconds at the end of each epoch: the logged ``elapsed_seconds``
    (validation excluded), or for older runs that lack it the running sum of ``epoch_seconds``
    (which counted the epoch's validation too); NaN when neither was logged."""
    elapsed = history.get("elapsed_seconds", pd.Series(np.nan, index=history.index))
    if len(history) and elapsed.notna().all():
        return elapsed.astype(float)
    per_epoch = history.get("epoch_seconds", pd.Series(np.nan, index=history.index))
    if len(history) and per_epoch.notna().all():
        return per_epoch.astype(float).cumsum()
    return pd.Series(np.nan, index=history.index)


def metric(runs: pd.DataFrame, name: str) -> pd.Series:
    """A logged metric of every run (by its key; MLflow's name may carry a group prefix)."""
    column = f"metrics.{metric_name(name)}"
    return runs[column] if column in runs else pd.Series(np.nan, index=runs.index)


@dataclass
class Comparison:
    """Everything the report shows, as read from MLflow."""

    runs: pd.DataFrame  # per (dataset, approach, seed, fold): the latest finished final run
    failed: pd.DataFrame  # final runs that failed or were killed
    studies: pd.DataFrame  # tuning studies' parent runs
    trials: pd.DataFrame  # tuning trials' runs
    experiments: list[str]
    _predictions: dict[str, pd.DataFrame] = field(repr=False, default_factory=dict)
    _histories: dict[str, pd.DataFrame] = field(repr=False, default_factory=dict)

    def history(self, run_id: str) -> pd.DataFrame:
        """Per epoch (1-based) of a run: ``val_seq_acc``, ``val_loss``, the logged timings and
        ``elapsed``, the training seconds at the epoch's end (:func:`training_seconds`)."""
        if run_id not in self._histories:
            frames = []
            for key in HISTORY:
                frames.append(pd.Series(query.metric_history(run_id, key), name=key, dtype=float))
            frame = pd.concat(frames, axis=1).sort_index().rename_axis("epoch").reset_index()
            frame = frame[frame.val_seq_acc.notna()].reset_index(drop=True)
            frame["elapsed"] = training_seconds(frame)
            self._histories[run_id] = frame
        return self._histories[run_id].copy()

    def predictions(self, run_id: str) -> pd.DataFrame:
        """The run's predictions (labels and predictions kept as text): its ``predictions.json``
        table, or the ``predictions.csv`` of runs logged before it."""
        if run_id not in self._predictions:
            frame = query.predictions(run_id)
            frame["prediction"] = frame.prediction.fillna("").astype(str)
            frame["label"] = frame.label.astype(str)
            self._predictions[run_id] = frame
        return self._predictions[run_id]

    def artifact_bytes(self, run_id: str, path: str) -> bytes:
        """An artifact's content."""
        return query.artifact_bytes(run_id, path)


def grouped_metrics(frame: pd.DataFrame) -> pd.DataFrame:
    """Runs logged before metrics were grouped (``test_seq_acc``, not
    ``accuracy/test_seq_acc``) read under the grouped names."""
    for key in GROUPED:
        old, new = f"metrics.{key}", f"metrics.{metric_name(key)}"
        if old in frame and old != new:
            frame[new] = frame[new].fillna(frame[old]) if new in frame else frame[old]
    return frame


REPLICATE = ["tags.dataset", "tags.suite", "tags.approach", "tags.seed", "tags.fold"]


def redone(failed: pd.DataFrame, finished: pd.DataFrame) -> pd.DataFrame:
    """Failed runs with ``redone``: the id of a finished run of the same dataset, suite, approach,
    seed and fold (a retry that went through), else ""."""
    done = finished.set_index(REPLICATE).run_id
    keys = failed[REPLICATE].itertuples(index=False, name=None)
    return failed.assign(redone=[done.get(key, "") for key in keys]).reset_index(drop=True)


def load_comparison(
    experiments: list[str] | None = None, suite: str | None = None, points: bool = False
) -> Comparison:
    """Final runs (not tuning trials) of ``experiments`` (default: all), optionally one suite's;
    with ``points`` the learning-curve points instead (a page of curves alone)."""
    names, frame = query.experiment_runs(experiments)
    frame = grouped_metrics(frame)
    for column in ("tags.kind", "tags.optuna_study", "tags.seed", "tags.error", "tags.curve_size"):
        if column not in frame:
            frame[column] = None
    frame["tags.suite"] = frame["tags.suite"].fillna("") if "tags.suite" in frame else ""
    # runs of one split have no fold: "" keeps them in the groupings below
    frame["tags.fold"] = frame["tags.fold"].fillna("") if "tags.fold" in frame else ""
    if suite:
        frame = frame[frame["tags.suite"] == suite]
    is_study = frame["tags.kind"] == "study"
    is_trial = frame["tags.optuna_study"].notna() & ~is_study
    is_curve = frame["tags.curve_size"].notna()  # a point of `bench curve`: not a leaderboard run
    final = frame[~is_study & ~is_trial & (is_curve if points else ~is_curve)]
    accuracy = f"metrics.{metric_name('test_seq_acc')}"
    if accuracy not in final:
        final = final.assign(**{accuracy: np.nan})
    finished = final[(final.status == "FINISHED") & final[accuracy].notna()]
    if finished.empty:
        raise ReportError(
            f"no finished training runs in {', '.join(names)}"
            + (f" for suite {suite!r}" if suite else "")
        )
    finished = finished.sort_values("start_time").groupby(REPLICATE, as_index=False).last()
    return Comparison(
        runs=finished.reset_index(drop=True),
        failed=redone(final[final.status.isin(["FAILED", "KILLED"])], finished),
        studies=frame[is_study].reset_index(drop=True),
        trials=frame[is_trial].reset_index(drop=True),
        experiments=names,
    )
