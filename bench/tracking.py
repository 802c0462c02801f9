"""Everything MLflow: where runs go, what a run records, and how it ends."""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import mlflow
import pandas as pd
import timm
import torch
from mlflow.models import infer_signature

from bench.data import Dataset
from bench.metrics import confusion_frame
from bench.plots import confusion_figure
from bench.recognizer import Recognizer, recognizer_metadata
from bench.train import TrainResult

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
PARENT_TAG = "mlflow.parentRunId"
GALLERY_SIZE = 24


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else a SQLite store in the working folder (MLflow 3's default)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


def use_experiment(name: str) -> str:
    """Point MLflow at the tracking store and experiment ``name``; returns its id."""
    mlflow.set_tracking_uri(tracking_uri())
    try:
        return mlflow.set_experiment(name).experiment_id
    except mlflow.exceptions.MlflowException:  # another worker created it at the same moment
        time.sleep(1)
        return mlflow.set_experiment(name).experiment_id


@contextmanager
def mlflow_run(
    experiment: str,
    run_name: str,
    tags: Mapping[str, Any],
    parent_run_id: str | None = None,
    finished_on: tuple[type[BaseException], ...] = (),
    state_tag: str | None = None,
) -> Iterator[mlflow.ActiveRun]:
    """An MLflow run that ends FINISHED, FAILED (with the error as a tag) or KILLED (Ctrl-C).

    Exceptions in ``finished_on`` (a pruned trial) end it FINISHED with a ``stopped`` tag; every
    exception is raised again. With ``state_tag`` the outcome (complete, pruned, interrupted or
    failed) is also tagged under that key.
    """
    experiment_id = use_experiment(experiment)
    tags = {k: str(v) for k, v in tags.items()}
    if parent_run_id:
        tags[PARENT_TAG] = parent_run_id  # the UI nests the run; no live parent is needed
    run = mlflow.start_run(experiment_id=experiment_id, run_name=run_name, tags=tags)

    def end(status: str, state: str, **end_tags: str) -> None:
        if state_tag:
            end_tags[state_tag] = state
        mlflow.set_tags(end_tags)
        mlflow.end_run(status)

    try:
        yield run
    except finished_on as err:
        end("FINISHED", "pruned", stopped=str(err)[:5000])
        raise
    except KeyboardInterrupt:
        end("KILLED", "interrupted", error="interrupted")
        raise
    except BaseException as err:
        end("FAILED", "failed", error=f"{type(err).__name__}: {err}"[:5000])
        raise
    end("FINISHED", "complete")


def end_orphaned_runs(optuna_trial: str) -> None:
    """End FAILED the still-running MLflow runs tagged ``optuna_trial`` (their worker died)."""
    mlflow.set_tracking_uri(tracking_uri())
    client = mlflow.MlflowClient()
    for run in mlflow.search_runs(
        search_all_experiments=True,
        filter_string=f"tags.optuna_trial = '{optuna_trial}' and attributes.status = 'RUNNING'",
        output_format="list",
    ):
        state_tag = "trial_state" if "optuna_study" in run.data.tags else "final_state"
        client.set_tag(run.info.run_id, state_tag, "failed")
        client.set_tag(run.info.run_id, "error", "worker died (its heartbeat stopped)")
        client.set_terminated(run.info.run_id, "FAILED")


def environment() -> dict[str, str]:
    return {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "mlflow": mlflow.__version__,
        "platform": platform.platform(),
        "cpu": cpu_name(),
        "torch_threads": torch.get_num_threads(),
        "git_commit": git_commit(),
    }


def cpu_name() -> str:
    """The processor's model name (``/proc/cpuinfo``), else what ``platform`` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def git_commit() -> str:
    """The commit of the code that ran, with ``-dirty`` when it had uncommitted changes."""
    here = Path(__file__).parent
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=here, capture_output=True, text=True, check=True
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=here,
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return commit + ("-dirty" if dirty else "")


class EpochLogger:
    """Trainer callback: per-epoch metrics to the active run."""

    def __init__(self) -> None:
        self.logged: set[int] = set()

    def __call__(self, epoch: int, stats: dict[str, float]) -> None:
        mlflow.log_metrics(stats, step=epoch + 1)
        self.logged.add(epoch)


def log_params(
    approach: str, hp: Mapping[str, Any], data: Mapping[str, Any], seed: int, device: str
) -> None:
    params = {
        **hp,
        "approach": approach,
        "seed": seed,
        "device": device,
        **{f"data.{k}": v for k, v in data.items()},
        **environment(),
    }
    mlflow.log_params({k: str(v) for k, v in params.items()})


def log_result(
    result: TrainResult, dataset: Dataset, logger: EpochLogger, log_model: bool = True
) -> None:
    """Final metrics, any epochs resumed from a checkpoint, predictions, figures and the model."""
    for epoch, stats in enumerate(result.history):
        if epoch not in logger.logged:
            mlflow.log_metrics(stats, step=epoch + 1)
    mlflow.log_metrics(
        {
            **{f"test_{k}": v for k, v in result.test.items()},
            "params": result.params,
            "flops": result.flops,
            "train_seconds": result.train_seconds,
            "train_img_per_s": result.img_per_s,
            **result.inference,
            "epochs_run": len(result.history),
        }
    )
    predictions = pd.DataFrame(result.test_predictions)
    mlflow.log_text(predictions.to_csv(index=False), "predictions.csv")
    hp = result.hparams
    store = dataset.store(hp["channels"], hp["height"], hp["width"])
    if store.skipped:
        mlflow.log_text("\n".join(f"{f}: {why}" for f, why in store.skipped), "skipped.txt")
    log_figure(misread_gallery(predictions, store), "misread.png")
    log_figure(
        confusion_figure(
            confusion_frame(predictions, result.codec.charset), "character confusions"
        ),
        "confusion.png",
    )
    meta = recognizer_metadata(
        result.approach, result.codec.kind, result.codec.charset, result.codec.max_len, hp
    )
    mlflow.log_dict(meta, "bench.json")
    if log_model:
        recognizer = Recognizer(result.model, hp["mean"], hp["std"]).cpu().eval()
        example = store.images[:1].numpy()
        with torch.no_grad():
            output = recognizer(torch.from_numpy(example)).float().numpy()
        mlflow.pytorch.log_model(
            recognizer,
            name="model",
            input_example=example,
            serialization_format="pickle",
            metadata=meta,
            signature=infer_signature(example, output),
        )


def log_figure(figure: plt.Figure, name: str) -> None:
    mlflow.log_figure(figure, name)
    plt.close(figure)


def misread_gallery(predictions: pd.DataFrame, store) -> plt.Figure:
    """Up to 24 misread test images, each titled ``label -> prediction``."""
    wrong = predictions[~predictions.correct].head(GALLERY_SIZE)
    index = {name: i for i, name in enumerate(store.files)}
    cols = 4
    rows = max(1, -(-len(wrong) // cols))
    figure, axes = plt.subplots(rows, cols, figsize=(cols * 3, rows * 1.2), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, row in zip(axes.flat, wrong.itertuples(), strict=False):
        image = store.images[index[row.file]]
        ax.imshow(image.permute(1, 2, 0).squeeze(-1).numpy(), cmap="gray")
        ax.set_title(f"{row.label} -> {row.prediction or '(empty)'}", fontsize=8, color="firebrick")
    if wrong.empty:
        axes.flat[0].text(0.5, 0.5, "no misread test images", ha="center", va="center")
    figure.tight_layout()
    return figure


def train_tracked(
    approach: str,
    dataset: Dataset,
    overrides: Mapping[str, Any] | None = None,
    seed: int = 0,
    device: str = "auto",
    experiment: str | None = None,
    suite: str = "",
    parent_run_id: str | None = None,
    callbacks: tuple = (),
    checkpoint_dir: Path | None = None,
    log_model: bool = True,
    progress: bool = True,
    tags: Mapping[str, Any] | None = None,
    run_name: str | None = None,
    finished_on: tuple[type[BaseException], ...] = (),
    state_tag: str | None = None,
) -> tuple[TrainResult, str]:
    """:func:`bench.train.train` inside an MLflow run (see :func:`mlflow_run` for how it ends);
    returns the result and the run id."""
    from bench.approaches import get_approach
    from bench.train import resolve_device, train

    hp = get_approach(approach).resolve(overrides)
    store = dataset.store(hp["channels"], hp["height"], hp["width"])
    run_tags = {
        "approach": approach,
        "dataset": dataset.name,
        "suite": suite,
        "seed": seed,
        **(tags or {}),
    }
    with mlflow_run(
        experiment or dataset.name,
        run_name or f"{approach}-seed{seed}",
        run_tags,
        parent_run_id,
        finished_on=finished_on,
        state_tag=state_tag,
    ) as run:
        log_params(approach, hp, dataset.describe(store), seed, str(resolve_device(device)))
        logger = EpochLogger()
        result = train(
            approach,
            dataset,
            overrides,
            seed=seed,
            device=device,
            callbacks=(logger, *callbacks),
            checkpoint_dir=checkpoint_dir,
            progress=progress,
        )
        log_result(result, dataset, logger, log_model=log_model)
    return result, run.info.run_id
