"""A tuning study's MLflow run: found by its tag or made once; its trials' runs nest under it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import mlflow
from mlflow.tracking.context.registry import resolve_tags

from bench.tracking.runs import metric_name, use_experiment


def study_run(
    experiment: str, study: str, tags: Mapping[str, Any], params: Mapping[str, Any]
) -> str:
    """The run of ``study`` (tag ``optuna_study``) in ``experiment``: found, else created with
    ``tags`` (and MLflow's context tags: user, source, git commit, as a fluent run gets them) and
    ``params``; ``params["trial_epochs"]`` also as a metric (for the report). Returns its id."""
    experiment_id = use_experiment(experiment)
    client = mlflow.MlflowClient()
    found = client.search_runs(
        [experiment_id],
        f"tags.optuna_study = '{study}'",
        max_results=1,
        order_by=["attributes.start_time ASC"],
    )
    if found:
        return found[0].info.run_id
    run = client.create_run(
        experiment_id,
        run_name=f"tune {tags['approach']} {tags['dataset']}",
        tags=resolve_tags({"optuna_study": study, **tags, "kind": "study"}),
    )
    shown = {**params, "storage": re.sub(r"//[^@/]*@", "//***@", str(params["storage"]))}
    client.log_batch(
        run.info.run_id, params=[mlflow.entities.Param(k, str(v)) for k, v in shown.items()]
    )
    client.log_metric(run.info.run_id, metric_name("trial_epochs"), params["trial_epochs"])
    return run.info.run_id


def summarize_study_run(
    run_id: str,
    metrics: Mapping[str, float],
    tags: Mapping[str, Any],
    status: str,
) -> None:
    """The study's counts and best scores as metrics, its best trial and parameters as tags
    (they change while a study goes on); the run ends with ``status`` unless that is RUNNING
    (others still work on the study)."""
    client = mlflow.MlflowClient()
    for key, value in tags.items():
        client.set_tag(run_id, key, value)
    for key, value in metrics.items():
        client.log_metric(run_id, metric_name(key), value)
    if status != "RUNNING":
        client.set_terminated(run_id, status)
