"""Result files of ``compare`` runs and the table made from them."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pandas as pd
import torch

from bench.config import cache_dir
from bench.data import Dataset
from bench.tracking import cpu_name, train_tracked
from bench.train import TrainResult

TABLE_COLUMNS = [
    "approach",
    "seed",
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
]


def save_result(result: TrainResult, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    record = {
        **result.summary(),
        "threads": torch.get_num_threads(),
        "cpu": cpu_name(),
        "hparams": result.hparams,
        "data": result.data,
        "history": result.history,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(record, indent=2, default=str))
    os.replace(tmp, path)


def train_and_record(
    name: str,
    dataset: Dataset,
    overrides: dict[str, Any],
    seed: int,
    device: str,
    out: Path,
    experiment: str | None = None,
    suite: str = "",
    progress: bool = True,
) -> Path:
    """Train (tracked in MLflow, experiment ``experiment``) unless ``out`` already holds this
    result; per-epoch checkpoints make an interrupted training resumable."""
    path = out / f"{name}-seed{seed}.json"
    if not path.exists():
        result, _ = train_tracked(
            name,
            dataset,
            overrides,
            seed=seed,
            device=device,
            experiment=experiment,
            suite=suite,
            progress=progress,
            log_model=False,
            checkpoint_dir=cache_dir() / "checkpoints",
        )
        save_result(result, path)
        print(
            f"{name} seed {seed}: test seq acc {result.test['seq_acc']:.4f}, "
            f"CER {result.test['cer']:.4f} ({result.train_seconds:.0f} s)",
            flush=True,
        )
    return path


def write_table(out: Path) -> pd.DataFrame:
    """Collect ``out/*.json`` into ``results.csv`` and a Markdown ``results.md``."""
    records = [json.loads(p.read_text()) for p in sorted(out.glob("*-seed*.json"))]
    if not records:
        raise FileNotFoundError(f"no results in {out}")
    frame = pd.DataFrame(records).reindex(columns=TABLE_COLUMNS)
    frame["dataset"] = records[0]["data"]["dataset"]
    frame.to_csv(out / "results.csv", index=False)
    shown = frame.assign(
        test_seq_acc=frame.test_seq_acc.map("{:.2%}".format),
        test_char_acc=frame.test_char_acc.map("{:.2%}".format),
        test_cer=frame.test_cer.map("{:.2%}".format),
        params=(frame.params / 1e6).map("{:.2f}M".format),
        flops=(frame.flops / 1e9).map("{:.2f}G".format),
        train_seconds=frame.train_seconds.map("{:.0f}".format),
        img_per_s=frame.img_per_s.map("{:.1f}".format),
    )
    lines = ["| " + " | ".join(shown.columns) + " |", "|" + "---|" * len(shown.columns)]
    lines += ["| " + " | ".join(map(str, row)) + " |" for row in shown.itertuples(index=False)]
    (out / "results.md").write_text("\n".join(lines) + "\n")
    return frame
