"""The report's analysis sections: the leader's errors, the tuning studies, the ablations."""

from __future__ import annotations

import base64
import contextlib
import itertools
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bench.metrics import GAP, confusion_frame
from bench.report import figures
from bench.report.data import Comparison, metric
from bench.tracking import metric_name


def has_double(label: str) -> bool:
    """A character repeated back to back (CTC must emit a blank between the two)."""
    return any(a == b for a, b in itertools.pairwise(label))


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
    errors = int(counts.values.sum() - np.trace(counts.values))
    top = [
        (t, r, int(counts.loc[t, r]))
        for t in counts.index
        for r in counts.columns
        if t != r and counts.loc[t, r] > 0
    ]
    return {
        "confusion_svg": figures.confusion_heatmap(counts, f"{leader}: confusions over all seeds"),
        "top_confusions": sorted(top, key=lambda x: -x[2])[:10],
        "slices_panel": figures.slice_bars(slices_frame),
        "slices": slice_table,
        "positions": position_table,
        "gallery": gallery,
        "errors": errors,
        "characters": int(pooled.label.astype(str).str.len().sum()),
        "doubled_share": float(pooled.label.map(lambda t: has_double(t)).mean()),
        "gap": GAP,
    }


IMPORTANCE_TRIALS = 10  # fewer complete trials: the importances come with a caveat


def tuning_section(comparison: Comparison, optuna_storage: str | None) -> list[dict[str, Any]]:
    """Per study: counts, best parameters, optimisation history and parameter importances (with
    a caveat when fewer than :data:`IMPORTANCE_TRIALS` complete trials back them)."""
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
                "value": metric(trials, "val_cer"),
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
            "best_cer": record.get(f"metrics.{metric_name('best_val_cer')}"),
            "best_seq_acc": record.get(f"metrics.{metric_name('best_val_seq_acc')}"),
            "history": figures.optimization_history(frame),
            "importances_svg": None,
            "caveat": None,
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
            complete = len(
                loaded.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
            )
            if values and complete < IMPORTANCE_TRIALS:
                section["caveat"] = (
                    f"Importances computed from {complete} complete "
                    f"trial{'' if complete == 1 else 's'}: with fewer than {IMPORTANCE_TRIALS}, "
                    "they are a rough first look, not a ranking to rely on."
                )
        except Exception as err:  # the storage may be elsewhere or hold too few trials
            section["note"] = f"parameter importances unavailable ({type(err).__name__}: {err})"
        sections.append(section)
    return sections


def budget(study: dict[str, Any]) -> str:
    """ "20 trials of 10 epochs" from a study run's ``trial_epochs`` metric (the epochs of its
    trials' spec)."""
    epochs = study.get(f"metrics.{metric_name('trial_epochs')}")
    each = (
        "the approach's own epochs"
        if epochs is None or pd.isna(epochs)
        else f"{int(epochs)} epoch{'' if int(epochs) == 1 else 's'}"
    )
    return f"{study.get('params.trials')} trials of {each}"


def curve_section(folder: Path | None) -> dict[str, Any] | None:
    """The learning curves ``bench curve`` wrote to ``folder/curve.csv``: the figure, the points,
    and per approach the fewest training images reaching 90% and 95%; None without them."""
    path = Path(folder) / "curve.csv" if folder is not None else None
    if path is None or not path.is_file():
        return None
    table = pd.read_csv(path, dtype={"seeds": str})
    if "start" not in table:  # a table of before pretraining: every point from scratch
        table["start"] = "scratch"
    keys = ["approach", "start"]
    needed = table.drop_duplicates(keys)[[*keys, "images_for_90%", "images_for_95%"]]
    zero_shot = table[table.train_images == 0].set_index(keys)
    needed["zero_shot"] = [
        zero_shot.test_seq_acc.get(key, np.nan)
        for key in zip(needed.approach, needed.start, strict=True)
    ]
    return {
        "dir": str(folder),
        "figure": figures.data_efficiency(table[table.train_images > 0]),
        "points": table.to_dict("records"),
        "needed": needed.rename(
            columns=lambda c: c.replace("images_for_", "n").replace("%", "")
        ).to_dict("records"),
    }


def ablation_tables(folder: Path | None) -> list[dict[str, Any]]:
    """The tables ``bench ablate`` wrote under ``folder`` (``*/ablation.csv``), by name."""
    if folder is None or not Path(folder).is_dir():
        return []
    tables = []
    for path in sorted(Path(folder).glob("*/ablation.csv")):
        frame = pd.read_csv(path, dtype={"per_seed": str})
        key = frame.columns[0]
        seeds_p = frame.get("p_seeds", pd.Series(np.nan, index=frame.index))  # tables before it
        frame["p_seeds"] = seeds_p.astype(object).where(seeds_p.notna(), None)
        rows = frame.rename(columns={key: "variant"}).to_dict("records")
        tables.append({"name": path.parent.name, "key": key, "rows": rows})
    return tables


def robustness_section(folder: Path | None) -> dict[str, Any] | None:
    """What ``bench robustness`` wrote to ``folder``: the figure, the per-model summary and the
    per-corruption table; None without them."""
    if folder is None or not (Path(folder) / "robustness.csv").is_file():
        return None
    table = pd.read_csv(Path(folder) / "robustness.csv", dtype={"seeds": str})
    summary = pd.read_csv(Path(folder) / "robustness-summary.csv")
    corrupted = table[table.corruption != "clean"]
    grid = [
        {"model": model, "corruption": corruption, "cells": cells.to_dict("records")}
        for (model, corruption), cells in corrupted.groupby(["model", "corruption"], sort=False)
    ]
    return {
        "dir": str(folder),
        "figure": figures.robustness(table),
        "summary": summary.to_dict("records"),
        "grid": grid,
        "severities": sorted(int(s) for s in corrupted.severity.unique()),
        "corruptions": list(dict.fromkeys(corrupted.corruption)),
        "drops": int(corrupted.significant.sum()),
        "tests": len(corrupted),
    }
