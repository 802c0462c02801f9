"""Reading runs back, for reports: runs as a frame, metric histories, logged tables, artifacts."""

from __future__ import annotations

import io
import tempfile
from pathlib import Path

import mlflow
import pandas as pd

from bench.errors import ReportError
from bench.tracking.runs import PREDICTIONS, metric_name, tracking_uri


def experiment_runs(experiments: list[str] | None = None) -> tuple[list[str], pd.DataFrame]:
    """The runs of ``experiments`` (default: every one but Default) as MLflow's pandas frame, and
    the experiments' names; an unknown experiment, or none with runs, is a :class:`ReportError`."""
    mlflow.set_tracking_uri(tracking_uri())
    known = {e.name: e.experiment_id for e in mlflow.MlflowClient().search_experiments()}
    names = experiments or [n for n in known if n != "Default"]
    if missing := [n for n in names if n not in known]:
        raise ReportError(
            f"unknown experiment {', '.join(map(repr, missing))} in {tracking_uri()}; "
            f"known: {', '.join(sorted(known)) or 'none'}"
        )
    frame = mlflow.search_runs([known[n] for n in names], output_format="pandas")
    if frame.empty:
        raise ReportError(f"no runs in experiment(s) {', '.join(names)} of {tracking_uri()}")
    return names, frame


def metric_history(run_id: str, key: str) -> dict[int, float]:
    """A metric's value per step (its grouped name, else the name runs logged before)."""
    client = mlflow.MlflowClient()
    points = client.get_metric_history(run_id, metric_name(key))
    if not points:
        points = client.get_metric_history(run_id, key)
    return {m.step: m.value for m in points}


def predictions(run_id: str) -> pd.DataFrame:
    """A run's per-image test predictions: its MLflow table, or the ``predictions.csv`` of runs
    logged before tables (file, label and prediction kept as text)."""
    table = run_table(run_id, PREDICTIONS)
    if table is not None:
        return table
    text = mlflow.artifacts.load_text(f"runs:/{run_id}/predictions.csv")
    return pd.read_csv(io.StringIO(text), dtype={"file": str, "label": str, "prediction": str})


def run_table(run_id: str, artifact: str) -> pd.DataFrame | None:
    """A table logged to the run with ``mlflow.log_table``; None when the run has none there."""
    try:
        logged = mlflow.artifacts.load_dict(f"runs:/{run_id}/{artifact}")
    except Exception:  # MLflow raises its own and the artifact store's errors for a missing file
        return None
    return pd.DataFrame(logged["data"], columns=logged["columns"])


def artifact_bytes(run_id: str, path: str) -> bytes:
    """An artifact's content, downloaded into a folder removed afterwards (MLflow's own download
    folder is left behind)."""
    with tempfile.TemporaryDirectory(prefix="bench-artifact-") as folder:
        local = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/{path}", dst_path=folder)
        return Path(local).read_bytes()


def check_store(uri: str) -> None:
    """The MLflow store at ``uri`` answers (raises what MLflow raises when it does not)."""
    mlflow.MlflowClient(uri).search_experiments(max_results=1)


def run_experiment(run_id: str) -> str:
    """The name of the run's experiment; a ``ValueError`` naming the run when there is none such."""
    mlflow.set_tracking_uri(tracking_uri())
    client = mlflow.MlflowClient()
    try:
        return client.get_experiment(client.get_run(run_id).info.experiment_id).name
    except mlflow.exceptions.MlflowException:
        raise ValueError(f"no MLflow run {run_id} in {mlflow.get_tracking_uri()}") from None


def run_tags(run_id: str) -> dict[str, str]:
    """A run's tags; a ``ValueError`` naming the run when there is none such."""
    mlflow.set_tracking_uri(tracking_uri())
    try:
        return dict(mlflow.MlflowClient().get_run(run_id).data.tags)
    except mlflow.exceptions.MlflowException:
        raise ValueError(f"no MLflow run {run_id} in {mlflow.get_tracking_uri()}") from None
