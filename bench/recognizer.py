"""A trained model packaged for use: uint8 images in, strings out."""

from __future__ import annotations

import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from bench.codecs import Codec, make_codec
from bench.data.store import decode_image
from bench.hparams import TrainConfig


class Recognizer(nn.Module):
    """Wraps a model with its normalisation: ``uint8 (N, C, H, W)`` -> logits ``(N, T, K)``."""

    def __init__(self, model: nn.Module, mean: Sequence[float], std: Sequence[float]):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        x = images.to(self.mean.device, torch.float32) / 255
        return self.model((x - self.mean) / self.std)


def recognizer_metadata(
    approach: str, codec_kind: str, charset: str, max_len: int, hp: dict[str, Any]
) -> dict[str, Any]:
    """What :func:`read_images` needs besides the weights (logged as ``bench.json``)."""
    return {
        "approach": approach,
        "codec": codec_kind,
        "charset": charset,
        "max_len": max_len,
        "hparams": hp,
    }


def build_recognizer(meta: dict[str, Any]) -> Recognizer:
    """The approach's model as ``bench.json`` describes it, untrained, with its normalisation."""
    from bench.approaches import get_approach

    hp = meta["hparams"]
    model = get_approach(meta["approach"]).build_model(
        len(meta["charset"]) + 1, meta["max_len"], hp
    )
    return Recognizer(model, hp["mean"], hp["std"])


def codec_from_metadata(meta: dict[str, Any]) -> Codec:
    options = TrainConfig.from_hparams(meta["hparams"]).codec_options(meta["codec"])
    return make_codec(meta["codec"], meta["charset"], meta["max_len"], **options)


def load_recognizer(model: str) -> tuple[Any, dict[str, Any]]:
    """A model logged by ``train`` as MLflow pyfunc (its ``predict`` returns strings): an MLflow
    run id, a model URI (``runs:/``, ``models:/``) or a local model folder; and its metadata."""
    import mlflow
    import mlflow.pyfunc

    from bench.tracking import tracking_uri

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
    import mlflow

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


def read_images(model: Any, meta: dict[str, Any], paths: Sequence[Path]) -> list[str]:
    """Decode image files as the model was trained (size, channels, order) and read them with
    the pyfunc ``model``."""
    cfg = TrainConfig.from_hparams(meta["hparams"])
    images = np.stack([decode_image(Path(p), *cfg.image_size) for p in paths])
    return list(model.predict(images))
