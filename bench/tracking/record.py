"""A training inside an MLflow run: the spec as params, every epoch, the result and its figures."""

from __future__ import annotations

import json
import tempfile
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import mlflow
import mlflow.data
import pandas as pd
import torch
from mlflow.entities import LoggedModelInput
from mlflow.models import infer_signature

from bench.codecs import Codec
from bench.data import Dataset, Split, TensorStore
from bench.plots import run_figures
from bench.recognizer import Recognizer, package
from bench.spec import RunSpec
from bench.tracking.models import logged_weights
from bench.tracking.runs import (
    PREDICTIONS,
    environment,
    log_figure,
    log_metrics,
    log_params,
    metric_name,
    mlflow_run,
)
from bench.training import Trainer, TrainResult, train

PACKAGE = Path(__file__).resolve().parents[1]  # bench/, shipped with every logged model
SERVING = Path(__file__).resolve().with_name("serving.py")  # the model as MLflow loads it


def log_run_table(
    run_id: str, frame: pd.DataFrame, artifact: str, metrics: dict[str, float]
) -> None:
    """A table (``mlflow.log_table``'s format, what :func:`bench.tracking.query.run_table` reads;
    appended to the run's table of that name, if it has one) and metrics, logged to a finished
    run."""
    client = mlflow.MlflowClient()
    client.log_table(run_id, frame, artifact)
    for key, value in metrics.items():
        client.log_metric(run_id, metric_name(key), value)


class EpochLogger:
    """Trainer callback: per-epoch metrics to the active run."""

    def __init__(self) -> None:
        self.logged: set[int] = set()

    def __call__(self, epoch: int, stats: dict[str, float]) -> None:
        log_metrics(stats, step=epoch + 1)
        self.logged.add(epoch)


def log_dataset(
    dataset: Dataset, store: TensorStore, split: Split, data: Mapping[str, Any]
) -> None:
    """The data a run saw as an MLflow dataset input (the UI's "Datasets"): one row per image
    (file, label, split part), named by the dataset, digested by its content fingerprint (the
    first 32 hex digits: MLflow keeps 36), sourced from its folder; the split sizes as tags."""
    parts = ["unused"] * len(store.files)
    for name, idx in (("train", split.train), ("val", split.val), ("test", split.test)):
        for i in idx.tolist():
            parts[i] = name
    frame = pd.DataFrame({"file": store.files, "label": store.labels, "split": parts})
    with warnings.catch_warnings():  # MLflow registers its local-files source twice
        warnings.filterwarnings("ignore", "The specified dataset source can be interpreted")
        inputs = mlflow.data.from_pandas(
            frame,
            source=str(dataset.source.root),
            targets="label",
            name=dataset.name,
            digest=dataset.source.fingerprint[:32],
        )
    sizes = {k: str(data[k]) for k in ("n_train", "n_val", "n_test", "split_digest")}
    mlflow.log_input(inputs, context="training", tags=sizes)


def log_result(
    result: TrainResult, dataset: Dataset, logger: EpochLogger, log_model: bool = True
) -> None:
    """Final metrics, any epochs resumed from a checkpoint, predictions, figures and the model."""
    for epoch, stats in enumerate(result.history):
        if epoch not in logger.logged:
            log_metrics(stats, step=epoch + 1)
    log_metrics(
        {
            **{f"test_{k}": v for k, v in (result.test or {}).items()},
            "params": result.params,
            "flops": result.flops,
            "train_seconds": result.train_seconds,
            "train_img_per_s": result.img_per_s,
            **result.inference,
            "epochs_run": len(result.history),
        }
    )
    if result.resumed_epochs:
        mlflow.set_tag("resumed_epochs", result.resumed_epochs)
    split = "test" if result.test is not None else "val"
    predictions = pd.DataFrame(result.predictions).assign(split=split)
    # an MLflow table: browsable in the UI with labels as text ("013" stays "013"; the UI's CSV
    # preview reads numbers into such labels), and what the report reads
    mlflow.log_table(predictions, PREDICTIONS)
    hp = result.hparams
    store = dataset.store(*result.spec.cfg.image_size)
    if store.skipped:
        mlflow.log_text("\n".join(f"{f}: {why}" for f, why in store.skipped), "skipped.txt")
    for name, figure in run_figures(predictions, store, result.codec.charset, split).items():
        log_figure(figure, name)
    recognizer, meta = package(result.model, result.approach, result.codec, hp)
    mlflow.log_dict(meta, "bench.json")
    if log_model:
        log_reader(recognizer, result.codec, meta, store.images[:2].numpy())


def log_reader(recognizer: Recognizer, codec: Codec, meta: dict[str, Any], example: Any) -> None:
    """The model as MLflow pyfunc from code (:mod:`bench.tracking.serving`, no pickle): its
    weights and ``bench.json`` as artifacts, the ``bench`` package as its code, strings out."""
    with torch.no_grad():
        read = codec.decode(recognizer(torch.from_numpy(example)).float())
    with tempfile.TemporaryDirectory(prefix="bench-model-") as folder:
        weights, described = Path(folder) / "weights.pt", Path(folder) / "bench.json"
        torch.save(recognizer.state_dict(), weights)
        described.write_text(json.dumps(meta))
        mlflow.pyfunc.log_model(
            name="model",
            python_model=str(SERVING),
            artifacts={"weights": str(weights), "bench": str(described)},
            code_paths=[str(PACKAGE)],
            input_example=example,
            signature=infer_signature(example, read),
            metadata=meta,
        )


def train_tracked(
    spec: RunSpec,
    dataset: Dataset,
    experiment: str | None = None,
    tags: Mapping[str, Any] | None = None,
    run_name: str | None = None,
    parent_run_id: str | None = None,
    callbacks: tuple = (),
    checkpoint_dir: Path | None = None,
    log_model: bool = True,
    progress: bool = True,
    test: bool = True,
    finished_on: tuple[type[BaseException], ...] = (),
    state_tag: str | None = None,
) -> tuple[TrainResult, str]:
    """:func:`bench.training.train` inside an MLflow run (see
    :func:`~bench.tracking.runs.mlflow_run` for how it ends); returns the result and the run id.

    With ``init=run:<id>`` the model starts from the weights that run logged (fetched before the
    run starts); the run records where they came from: the logged model as an input (MLflow's
    lineage), the tags ``init_run`` and ``init_dataset``.
    """
    run_tags = {
        "approach": spec.approach,
        "source": spec.source,
        "dataset": spec.dataset,
        "seed": spec.seed,
        **({"fold": spec.fold, "folds": spec.hparams["folds"]} if spec.kfold else {}),
        "suite": "",
        **(tags or {}),
    }
    start = logged_weights(spec.cfg.init.removeprefix("run:")) if spec.cfg.init else None
    if start is not None:
        if start.meta["approach"] != spec.approach:
            raise ValueError(
                f"init={spec.cfg.init} is a {start.meta['approach']} model; "
                f"this run is {spec.approach}"
            )
        run_tags |= {"init_run": start.run_id, "init_dataset": start.tags.get("dataset", "")}
    with mlflow_run(
        experiment or spec.dataset,
        run_name or spec.label,
        run_tags,
        parent_run_id,
        finished_on=finished_on,
        state_tag=state_tag,
    ) as run:
        log_params({**spec.params(), **environment()})
        if start is not None and start.model_id:  # as mlflow.evaluate records its model
            mlflow.MlflowClient().log_inputs(
                run.info.run_id, models=[LoggedModelInput(start.model_id)]
            )

        def log_data(trainer: Trainer) -> None:
            log_params({f"data.{k}": v for k, v in trainer.data.items()})
            log_dataset(dataset, trainer.store, trainer.split, trainer.data)

        logger = EpochLogger()
        result = train(
            spec,
            dataset,
            on_start=log_data,
            callbacks=(logger, *callbacks),
            checkpoint_dir=checkpoint_dir,
            progress=progress,
            test=test,
            initial_state=start.model_state() if start is not None else None,
        )
        log_result(result, dataset, logger, log_model=log_model)
    return result, run.info.run_id
