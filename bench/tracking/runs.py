"""MLflow plumbing: where runs go, how a run starts and ends, metric names, the environment a
run records. What a training logs is in :mod:`bench.tracking.record`."""

from __future__ import annotations

import contextlib
import fcntl
import os
import platform
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import mlflow
import timm
import torch

DEFAULT_TRACKING_URI = "sqlite:///mlflow.db"
PREDICTIONS = "predictions.json"  # a run's per-image test readings: file, label, prediction
PARENT_TAG = "mlflow.parentRunId"


# MLflow's UI shows a run's charts in sections by the prefix before "/", sorted by name, before
# the unprefixed ones: accuracy comes first, then the losses, then progress, size, speed, a
# study's bookkeeping and timings
METRIC_GROUPS = {
    "accuracy": (
        "val_seq_acc",
        "val_char_acc",
        "val_cer",
        "test_seq_acc",
        "test_char_acc",
        "test_cer",
    ),
    "loss": ("train_loss", "val_loss", "test_loss"),
    "progress": ("steps", "images", "lr", "epochs_run"),
    "size": ("params", "flops"),
    "speed": (
        "img_per_s",
        "train_img_per_s",
        "infer_img_per_s",
        "latency_ms_p50",
        "latency_ms_p95",
    ),
    "study": ("trial_epochs", "best_value", "best_val_cer", "best_val_seq_acc"),
    "time": ("elapsed_seconds", "epoch_seconds", "train_seconds"),
    "robustness": ("robust_clean_seq_acc", "robust_seq_acc_s1_3", "robust_seq_acc_s1_5"),
    "onnx": ("onnx_parity", "onnx_max_abs_logit_diff"),  # after loss: the UI sorts by name
}
_GROUP_OF = {key: group for group, keys in METRIC_GROUPS.items() for key in keys}


def metric_name(key: str) -> str:
    """The MLflow name of a metric: ``group/key`` for the keys of :data:`METRIC_GROUPS` (and a
    study's ``n_*`` counts), else the key itself."""
    group = _GROUP_OF.get(key) or ("study" if key.startswith("n_") else None)
    return f"{group}/{key}" if group else key


def log_metrics(values: Mapping[str, float], step: int | None = None) -> None:
    """``mlflow.log_metrics`` under :func:`metric_name`'s names."""
    mlflow.log_metrics({metric_name(k): v for k, v in values.items()}, step=step)


def tracking_uri() -> str:
    """``$MLFLOW_TRACKING_URI``, else a SQLite store in the working folder (MLflow 3's default)."""
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_TRACKING_URI


# MLflow's UI opens an experiment by its kind; without the tag it guesses GenAI (traces, tokens)
EXPERIMENT_KIND = ("mlflow.experimentKind", "custom_model_development")
UI_ADDRESS = "http://127.0.0.1:5000"  # where `make ui` (`python -m bench ui`) serves a local store


def ui_base() -> str:
    """The address of the MLflow UI for the tracking store: the server itself for an http(s)
    store, else what ``python -m bench ui`` serves."""
    uri = tracking_uri()
    return uri.rstrip("/") if uri.startswith(("http://", "https://")) else UI_ADDRESS


def latest_experiment() -> str | None:
    """The name of the most recently updated experiment (not MLflow's Default), if any."""
    client = mlflow.MlflowClient(tracking_uri())
    for experiment in client.search_experiments(order_by=["last_update_time DESC"]):
        if experiment.name != "Default":
            return experiment.name
    return None


def training_view(experiment: str | None = None, base: str | None = None) -> str:
    """A link that opens MLflow's UI on an experiment's runs in its training (machine learning)
    view: MLflow 3 opens an experiment in its GenAI view unless the link asks for
    ``workflowType=machine_learning``. Without ``experiment``, the experiments list."""
    base = base or ui_base()
    if experiment is None:
        return f"{base}/#/experiments?workflowType=machine_learning"
    found = mlflow.MlflowClient(tracking_uri()).get_experiment_by_name(experiment)
    if found is None:
        return training_view(None, base)
    return f"{base}/#/experiments/{found.experiment_id}/runs?workflowType=machine_learning"


def use_experiment(name: str) -> str:
    """Point MLflow at the tracking store and experiment ``name`` (of the model-training kind);
    returns its id."""
    uri = tracking_uri()
    mlflow.set_tracking_uri(uri)
    with store_lock(uri):
        try:
            experiment = mlflow.set_experiment(name)
        except mlflow.exceptions.MlflowException:  # another worker created it at the same moment
            time.sleep(1)
            experiment = mlflow.set_experiment(name)
        if experiment.tags.get(EXPERIMENT_KIND[0]) != EXPERIMENT_KIND[1]:
            mlflow.set_experiment_tag(*EXPERIMENT_KIND)
    return experiment.experiment_id


@contextmanager
def store_lock(uri: str) -> Iterator[None]:
    """Held while a process opens a SQLite store (a file lock beside it): processes that start
    together on a new store create its tables once (two at once fail MLflow's migration)."""
    if not uri.startswith("sqlite:///"):
        yield
        return
    lock = Path(uri.removeprefix("sqlite:///")).with_suffix(".bench-lock")
    lock.parent.mkdir(parents=True, exist_ok=True)
    with lock.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
    run = mlflow.start_run(
        experiment_id=experiment_id,
        run_name=run_name,
        tags=tags,
        log_system_metrics=os.environ.get("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING") != "false",
    )

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


def log_params(params: Mapping[str, Any]) -> None:
    """Params of the active run, as strings (MLflow's own type for params)."""
    mlflow.log_params({k: str(v) for k, v in params.items()})


def log_figure(figure: Any, name: str) -> None:
    """A matplotlib figure as an artifact of the active run; the figure is closed."""
    import matplotlib.pyplot as plt

    mlflow.log_figure(figure, name)
    plt.close(figure)


def log_perf(
    name: str,
    params: Mapping[str, Any],
    metrics: Mapping[str, Mapping[str, float]],
    table: Any,
    experiment: str,
) -> str:
    """``perf``'s figures as a run of ``experiment``: ``params`` and the environment, one metric
    per approach and figure (``APPROACH.FIGURE``), the whole table as ``perf.csv``; its id."""
    use_experiment(experiment)
    with mlflow.start_run(run_name=name) as run:
        mlflow.log_params({**environment(), **params})
        for approach, figures in metrics.items():
            mlflow.log_metrics({f"{approach}.{k}": v for k, v in figures.items()})
        mlflow.log_text(table.to_csv(index=False), "perf.csv")
    return run.info.run_id


def active_run_id() -> str:
    """The id of the run a training is logging to now."""
    return mlflow.active_run().info.run_id
