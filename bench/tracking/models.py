"""Models logged to MLflow: loading one by run id, URI or folder."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc

from bench.recognizer import Recognizer, build_recognizer
from bench.tracking.runs import metric_name, tracking_uri


def load_recognizer(model: str) -> tuple[Any, dict[str, Any]]:
    """A model logged by ``train`` as MLflow pyfunc (its ``predict`` returns strings): an MLflow
    run id, a model URI (``runs:/``, ``models:/``) or a local model folder; and its metadata."""
    mlflow.set_tracking_uri(tracking_uri())
    is_run_id = ":" not in model and not Path(model).exists()
    uri = f"runs:/{model}/model" if is_run_id else model
    if is_run_id:
        check_run_has_model(model)
    with tempfile.TemporaryDirectory(prefix="bench-model-") as folder:  # nothing left behind
        try:
            local = mlflow.artifacts.download_artifacts(artifact_uri=uri, dst_path=folder)
            meta = mlflow.models.Model.load(local).metadata
        except (mlflow.exceptions.MlflowException, OSError) as err:
            raise ValueError(f"no model at {uri}: {err}") from None
        if not meta or "charset" not in meta:
            raise ValueError(f"{uri} was not logged by captcha-bench (no decoding metadata)")
        return mlflow.pyfunc.load_model(local), meta


def check_run_has_model(run_id: str) -> mlflow.entities.Run:
    """The run; a run id that names a run without a logged model is an error that says which
    runs have one (``train`` logs one; suites only with ``log_models: true``)."""
    try:
        run = mlflow.MlflowClient().get_run(run_id)
    except mlflow.exceptions.MlflowException:
        raise ValueError(f"no MLflow run {run_id} in {mlflow.get_tracking_uri()}") from None
    if not mlflow.MlflowClient().list_artifacts(run_id, "model"):
        suite = run.data.tags.get("suite")
        why = (
            f"it is a run of suite {suite!r}, which logs models only with `log_models: true`"
            if suite
            else "it was trained with --no-model"
        )
        raise ValueError(f"run {run_id} logged no model: {why}; `python -m bench train` logs one")
    return run


@dataclass(frozen=True)
class LoggedWeights:
    """The recognizer a run logged: its state dict (``model.*`` and the normalisation), its
    ``bench.json`` metadata, its MLflow logged model (None for a model of MLflow 2), its tags."""

    run_id: str
    model_id: str | None
    meta: dict[str, Any]
    state: dict[str, Any]
    tags: dict[str, str]

    def model_state(self) -> dict[str, Any]:
        """The weights of the approach's model alone (what ``init`` starts from)."""
        prefix = "model."
        return {k.removeprefix(prefix): v for k, v in self.state.items() if k.startswith(prefix)}

    def recognizer(self) -> Recognizer:
        """The logged recognizer, rebuilt and loaded, in eval mode on the CPU."""
        recognizer = build_recognizer(self.meta)
        recognizer.load_state_dict(self.state)
        return recognizer.eval()


def logged_weights(run_id: str) -> LoggedWeights:
    """Fetch the weights and metadata of the model run ``run_id`` logged (the two files, not the
    model's copy of the bench package); a run that does not exist or logged no model is a
    ``ValueError`` saying so."""
    import torch

    mlflow.set_tracking_uri(tracking_uri())
    client = mlflow.MlflowClient()
    run = check_run_has_model(run_id)
    outputs = run.outputs.model_outputs if run.outputs else []
    model_id = outputs[0].model_id if outputs else None
    model = (
        client.get_logged_model(model_id).artifact_location if model_id else f"runs:/{run_id}/model"
    )
    with tempfile.TemporaryDirectory(prefix="bench-weights-") as folder:
        weights = mlflow.artifacts.download_artifacts(
            f"{model}/artifacts/weights.pt", dst_path=folder
        )
        state = torch.load(weights, map_location="cpu", weights_only=True)
    meta = mlflow.artifacts.load_dict(f"runs:/{run_id}/bench.json")
    return LoggedWeights(run_id, model_id, meta, state, dict(run.data.tags))


def log_export(run_id: str, path: Path, metrics: dict[str, float]) -> None:
    """An exported file as an artifact of the run it came from (under ``export/``), with its
    check's metrics."""
    client = mlflow.MlflowClient()
    client.log_artifact(run_id, str(path), "export")
    for key, value in metrics.items():
        client.log_metric(run_id, metric_name(key), value)


def register_version(run_id: str, name: str) -> str:
    """The model run ``run_id`` logged as a new version of registered model ``name`` (created
    on first use; the version keeps its run: MLflow's lineage); returns the version."""
    mlflow.set_tracking_uri(tracking_uri())
    check_run_has_model(run_id)
    return str(mlflow.register_model(f"runs:/{run_id}/model", name).version)


def registered_version(name: str, run_id: str) -> tuple[str, list[str]] | None:
    """(version, aliases) of the newest version of ``name`` made from run ``run_id``; None when
    the run's model is not registered there."""
    mlflow.set_tracking_uri(tracking_uri())
    found = mlflow.MlflowClient().search_model_versions(f"name = '{name}' and run_id = '{run_id}'")
    if not found:
        return None
    newest = max(found, key=lambda v: int(v.version))
    return str(newest.version), list(newest.aliases)


def alias_run(name: str, alias: str) -> tuple[str, str] | None:
    """(version, run id) that ``name@alias`` points at; None when the model or alias is not
    there yet."""
    try:
        version = mlflow.MlflowClient().get_model_version_by_alias(name, alias)
    except mlflow.exceptions.MlflowException:
        return None
    return str(version.version), version.run_id


def set_alias(name: str, alias: str, version: str, tags: dict[str, str]) -> None:
    """Point ``name@alias`` at ``version`` and tag the version (why it got the alias)."""
    client = mlflow.MlflowClient()
    client.set_registered_model_alias(name, alias, version)
    for key, value in tags.items():
        client.set_model_version_tag(name, version, key, value)
