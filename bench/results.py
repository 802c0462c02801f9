"""Result files of ``compare`` runs and the table made from them."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from bench.allocator import malloc_mode
from bench.data import Dataset
from bench.hparams import TrainConfig
from bench.paths import cache_dir
from bench.spec import RunSpec
from bench.tracking import cpu_name
from bench.tracking.record import train_tracked
from bench.training import EpochLines, TrainResult

TABLE_COLUMNS = [
    "approach",
    "source",
    "split",
    "n_train",
    "precision",
    "seed",
    "fold",
    "epochs",
    "test_seq_acc",
    "test_char_acc",
    "test_cer",
    "params",
    "flops",
    "train_seconds",
    "img_per_s",
    "device",
    "threads",
    "dataset",
]


def save_result(result: TrainResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        **result.summary(),
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "malloc": malloc_mode(),
        "split": result.hparams["split"],
        "fold": result.spec.fold,
        "n_train": result.data["n_train"],
        "hparams": result.hparams,
        "spec": {k: v for k, v in result.spec.params().items() if k not in result.hparams},
        "data": result.data,
        "history": result.history,
        "predictions": result.predictions,  # of the test split: paired tests between runs
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    os.replace(tmp, path)


def result_path(spec: RunSpec, out: Path) -> Path:
    """``OUT/<approach>-<dataset>-seed<S>[-fold<F>].json``; the dataset name made file-safe."""
    dataset = re.sub(r"[^A-Za-z0-9.]+", "-", spec.dataset).strip("-")
    fold = f"-fold{spec.fold}" if spec.kfold else ""
    return out / f"{spec.approach}-{dataset}-seed{spec.seed}{fold}.json"


def check_same_run(path: Path, spec: RunSpec) -> None:
    """A kept result is reused only for the same hyperparameters, data and split; else say what
    differs. A training setting the kept result predates counts at its generic default (what the
    code did before the setting existed: e.g. ``alphabet: dataset``); model keys it predates are
    not compared."""
    record = json.loads(path.read_text())
    generic = json.loads(json.dumps(TrainConfig().to_dict()))
    kept = {
        **generic,
        **record["hparams"],
        **{k: record["data"][k] for k in ("fingerprint", "split_seed")},
    }
    asked = {**spec.hparams, "fingerprint": spec.fingerprint, "split_seed": spec.split_seed}
    wanted = json.loads(json.dumps(asked, default=str))
    differ = sorted(k for k in kept if kept[k] != wanted.get(k))
    if differ:
        shown = ", ".join(f"{k}: kept {kept[k]!r}, asked {wanted.get(k)!r}" for k in differ)
        raise ValueError(
            f"{path} holds a result of other settings ({shown}); "
            "remove it or write to another --out"
        )


def train_and_record(
    spec: RunSpec,
    dataset: Dataset,
    out: Path,
    experiment: str | None = None,
    suite: str = "",
    progress: bool = True,
    tags: dict[str, Any] | None = None,
) -> Path:
    """Train ``spec`` (tracked in MLflow, experiment ``experiment``, with ``tags``; a line per
    epoch) unless ``out`` already holds its result; per-epoch checkpoints make an interrupted
    training resumable."""
    path = result_path(spec, out)
    if path.exists():
        check_same_run(path, spec)
        return path
    result, _ = train_tracked(
        spec,
        dataset,
        experiment=experiment,
        tags={"suite": suite, **(tags or {})},
        callbacks=(EpochLines(spec),),
        progress=progress,
        log_model=False,
        checkpoint_dir=cache_dir() / "checkpoints",
    )
    save_result(result, path)
    print(
        f"{spec.label}: test seq acc {result.test['seq_acc']:.2%}, "
        f"CER {result.test['cer']:.2%} ({result.train_seconds:.0f} s, {len(result.history)} "
        "epochs)",
        flush=True,
    )
    return path


def write_table(out: Path) -> pd.DataFrame:
    """Collect ``out/*.json`` into ``results.csv`` and a Markdown ``results.md``: the table under
    a reproduction summary that takes the sources' figures and the targets from ``out/targets.json``
    where there is one (:mod:`bench.report.reproduction`)."""
    from bench.report.reproduction import read_targets, summary_lines

    records = [json.loads(p.read_text()) for p in sorted(out.glob("*-seed*.json"))]
    if not records:
        raise FileNotFoundError(f"no results in {out}")
    frame = pd.DataFrame(records).reindex(columns=TABLE_COLUMNS)
    frame["n_train"] = frame.n_train.astype("Int64")  # records before it was kept have none
    frame.to_csv(out / "results.csv", index=False)
    shown = (
        frame.assign(
            test_seq_acc=frame.test_seq_acc.map("{:.2%}".format),
            test_char_acc=frame.test_char_acc.map("{:.2%}".format),
            test_cer=frame.test_cer.map("{:.2%}".format),
            params=(frame.params / 1e6).map("{:.2f}M".format),
            flops=(frame.flops / 1e9).map("{:.2f}G".format),
            train_seconds=frame.train_seconds.map("{:.0f}".format),
            img_per_s=frame.img_per_s.map("{:.1f}".format),
        )
        .astype(object)
        .fillna("-")
    )
    lines = ["| " + " | ".join(shown.columns) + " |", "|" + "---|" * len(shown.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in shown.itertuples(index=False)]
    summary = summary_lines(records, read_targets(out))
    (out / "results.md").write_text("\n".join([*summary, "", *lines]) + "\n")
    return frame
