"""Training hyperparameters shared by every approach, with generic defaults."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any


@dataclass(frozen=True)
class TrainConfig:
    """What the trainer needs; an approach overrides these with its seed's values.

    Images are scaled to [0, 1], then normalised as ``(x - mean) / std`` per channel (seed 001's raw
    0..255 input is ``mean 0, std 1/255``).
    """

    channels: int = 3
    height: int = 50
    width: int = 200
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    max_len: int = 0  # positions a head reads; 0: the dataset's longest label
    optimizer: str = "adam"  # adam | adamw (fastai's: betas 0.9/0.99, eps 1e-5) | sgd | adadelta
    lr: float = 1e-3
    weight_decay: float = 0.0
    momentum: float = 0.9  # sgd only
    batch_size: int = 32
    drop_last: bool = False  # drop the last partial training batch (fastai does, PyTorch does not)
    epochs: int = 30
    schedule: str = "none"  # none | onecycle | plateau
    pct_start: float = 0.25  # onecycle warm-up share
    plateau_factor: float = 0.8
    plateau_patience: int = 5
    grad_clip: float = 0.0  # max gradient norm; 0 disables
    label_smoothing: float = 0.0  # ce codec
    decoder: str = "greedy"  # ctc codec: greedy | beam
    beam_width: int = 10
    emission_threshold: float | None = None  # ctc beam: skip characters below this log-prob
    rotate: float = 0.0  # augmentation: max degrees
    brightness: float = 0.0  # augmentation: fastai max_lighting
    contrast: float = 0.0

    @classmethod
    def field_names(cls) -> set[str]:
        return {f.name for f in fields(cls)}

    @classmethod
    def from_hparams(cls, hp: dict[str, Any]) -> TrainConfig:
        values = {k: v for k, v in hp.items() if k in cls.field_names()}
        for key in ("mean", "std"):
            if key in values:
                values[key] = tuple(float(v) for v in values[key])
        return cls(**values)

    def codec_options(self, kind: str) -> dict[str, Any]:
        """The options of codec ``kind`` (``"ce"`` or ``"ctc"``) that these settings choose."""
        if kind == "ce":
            return {"label_smoothing": self.label_smoothing}
        return {
            "decoder": self.decoder,
            "beam_width": self.beam_width,
            "emission_threshold": self.emission_threshold,
        }

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
