"""A trained model packaged for use: uint8 images in, strings out."""

from __future__ import annotations

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


def package(
    model: nn.Module, approach: str, codec: Codec, hp: dict[str, Any]
) -> tuple[Recognizer, dict[str, Any]]:
    """A trained ``model`` as a CPU recognizer in eval mode, with its ``bench.json`` metadata."""
    meta = recognizer_metadata(approach, codec.kind, codec.charset, codec.max_len, hp)
    return Recognizer(model, hp["mean"], hp["std"]).cpu().eval(), meta


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


def decode_images(meta: dict[str, Any], paths: Sequence[Path]) -> np.ndarray:
    """Image files decoded as the model was trained (size, channels, order): uint8 NCHW."""
    cfg = TrainConfig.from_hparams(meta["hparams"])
    return np.stack([decode_image(Path(p), *cfg.image_size) for p in paths])


def read_images(model: Any, meta: dict[str, Any], paths: Sequence[Path]) -> list[str]:
    """Read image files with ``model`` (the pyfunc model, or an ONNX reader: anything whose
    ``predict`` takes uint8 images and returns strings)."""
    return list(model.predict(decode_images(meta, paths)))
