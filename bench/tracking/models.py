"""Models logged to MLflow: loading one by run id, URI or folder."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import mlflow
import mlflow.pyfunc

from bench.tracking.runs import tracking_uri


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


def check_run_has_model(run_id: str) -> None:
    """A run id that names a run without a logged model is an error that says which runs have one
    (``train`` logs one; suites only with ``log_models: true``)."""
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


@dataclass(frozen=True)
class InitialWeights:
    """The weights ``init=run:<id>`` names: the model part of that run's logged recognizer."""

    run_id: str
    model_id: str | None  # its MLflow logged model (lineage), None for a model of MLflow 2
    approach: str
    dataset: str
    state: dict[str, Any]


def initial_weights(init: str) -> InitialWeights:
    """Fetch the weights of ``init`` (``run:<MLflow run id>``); a run that does not exist or logged
    no model is a ``ValueError`` saying so."""
    import torch

    run_id = init.removeprefix("run:")
    mlflow.set_tracking_uri(tracking_uri())
    client = mlflow.MlflowClient()
    check_run_has_model(run_id)
    run = client.get_run(run_id)
    outputs = run.outputs.model_outputs if run.outputs else []
    model_id = outputs[0].model_id if outputs else None
    # the two files needed, not the model's copy of the bench package
    model = (
        client.get_logged_model(model_id).artifact_location if model_id else f"runs:/{run_id}/model"
    )
    with tempfile.TemporaryDirectory(prefix="bench-init-") as folder:
        weights = mlflow.artifacts.download_artifacts(
            f"{model}/artifacts/weights.pt", dst_path=folder
        )
        meta = mlflow.artifacts.load_dict(f"runs:/{run_id}/bench.json")
        state = torch.load(weights, map_location="cpu", weights_only=True)
    return InitialWeights(
        run_id=run_id,
        model_id=model_id,
        approach=meta["approach"],
        dataset=run.data.tags.get("dataset", ""),
        state={k.removeprefix("model."): v for k, v in state.items() if k.startswith("model.")},
    )
