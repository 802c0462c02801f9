"""Training hyperparameters shared by every approach, with generic defaults and their ranges."""

from __future__ import annotations

import re
import string
from dataclasses import asdict, dataclass, fields
from typing import Any

from bench.data.store import DECODE_ORDERS


@dataclass(frozen=True)
class TrainConfig:
    """What the trainer needs; an approach overrides these with its source's values.

    Images are scaled to [0, 1], then normalised as ``(x - mean) / std`` per channel (source 001's
    raw 0..255 input is ``mean 0, std 1/255``).
    """

    channels: int = 3
    height: int = 50
    width: int = 200
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    max_len: int = 0  # positions a head reads; 0: the dataset's longest label
    alphabet: str = "dataset"  # output classes: the dataset's characters, or one of ALPHABETS
    split: str = "benchmark"  # SPLITS: benchmark (70/10/20) | source (its holdout) | kfold
    holdout: float = 0.2  # with split=source: the share the source held out (test = validation)
    folds: int = 5  # with split=kfold: how many folds (the run's fold is a spec field, like seed)
    train_size: int = 0  # train on this many of the training images (nested subsets); 0: all
    decode: str = "convert-resize"  # image decoding order (source 001: resize-convert)
    optimizer: str = "adam"  # OPTIMIZERS: adam | adamw (fastai's: betas 0.9/0.99, eps 1e-5) | ...
    lr: float = 1e-3
    weight_decay: float = 0.0
    wd_bn_bias: bool = True  # decay norm-layer parameters and biases too (fastai: False)
    momentum: float = 0.9  # sgd only
    batch_size: int = 32
    drop_last: bool = False  # drop the last partial training batch (fastai does, PyTorch does not)
    epochs: int = 30  # with a budget: at most this many
    budget: float = 0.0  # seconds of training (validation excluded; "8m" in overrides); 0: off
    schedule: str = "none"  # none | onecycle | linear (decay to 0) | plateau
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
    init: str = ""  # start from the weights of the model a run logged: run:<MLflow run id>

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

    @property
    def image_size(self) -> tuple[int, int, int, str]:
        """What a decoded store is made with: channels, height, width, decoding order."""
        return self.channels, self.height, self.width, self.decode

    def output_charset(self, dataset_charset: str) -> str:
        """The characters the head emits: the dataset's, or a named alphabet that must hold
        every one of them (else a ``ValueError`` naming those it lacks)."""
        if self.alphabet == "dataset":
            return dataset_charset
        charset = ALPHABETS[self.alphabet]
        if missing := sorted(set(dataset_charset) - set(charset)):
            raise ValueError(
                f"alphabet={self.alphabet!r} lacks the dataset's characters {''.join(missing)!r}"
            )
        return charset

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

    def check(self) -> None:
        """Out-of-range values raise a ``ValueError`` naming the hyperparameter."""
        for key, ok, wanted in (
            ("channels", self.channels in (1, 3), "1 or 3"),
            ("height", self.height >= 1, ">= 1"),
            ("width", self.width >= 1, ">= 1"),
            ("mean", len(self.mean) in (1, self.channels), f"1 or {self.channels} values"),
            ("std", len(self.std) in (1, self.channels) and min(self.std) > 0, "positive"),
            ("max_len", self.max_len >= 0, ">= 0 (0: the longest label)"),
            (
                "alphabet",
                self.alphabet in ("dataset", *ALPHABETS),
                " | ".join(("dataset", *ALPHABETS)),
            ),
            ("split", self.split in SPLITS, " | ".join(SPLITS)),
            ("holdout", 0 < self.holdout < 1, "in (0, 1)"),
            ("folds", self.folds >= 2, ">= 2"),
            ("train_size", self.train_size >= 0, ">= 0 (0: every training image)"),
            ("decode", self.decode in DECODE_ORDERS, " | ".join(DECODE_ORDERS)),
            ("optimizer", self.optimizer in OPTIMIZERS, " | ".join(OPTIMIZERS)),
            ("lr", self.lr > 0, "> 0"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("momentum", 0 <= self.momentum < 1, "in [0, 1)"),
            ("batch_size", self.batch_size >= 1, ">= 1"),
            (
                "epochs",
                self.epochs >= 1 or (self.epochs == 0 and self.init),
                ">= 1 (0 with init: test the starting weights untrained)",
            ),
            ("budget", self.budget >= 0, ">= 0 seconds (0: train the epochs)"),
            ("schedule", self.schedule in SCHEDULES, " | ".join(SCHEDULES)),
            ("pct_start", 0 < self.pct_start < 1, "in (0, 1)"),
            ("plateau_factor", 0 < self.plateau_factor < 1, "in (0, 1)"),
            ("plateau_patience", self.plateau_patience >= 0, ">= 0"),
            ("grad_clip", self.grad_clip >= 0, ">= 0 (0: off)"),
            ("label_smoothing", 0 <= self.label_smoothing < 1, "in [0, 1)"),
            ("decoder", self.decoder in DECODERS, " | ".join(DECODERS)),
            ("beam_width", self.beam_width >= 1, ">= 1"),
            ("rotate", 0 <= self.rotate <= 180, "in [0, 180] degrees"),
            ("brightness", 0 <= self.brightness < 1, "in [0, 1)"),
            ("contrast", 0 <= self.contrast < 1, "in [0, 1)"),
            ("init", not self.init or INIT_RUN.fullmatch(self.init), "run:<MLflow run id>"),
        ):
            if not ok:
                raise ValueError(f"{key}={getattr(self, key)!r} is out of range: use {wanted}")


INIT_RUN = re.compile(r"run:([0-9a-f]{32})")
OPTIMIZERS = ("adam", "adamw", "sgd", "adadelta")
# named output alphabets; source 001 reads digits + lowercase (36 characters, 37 classes)
ALPHABETS = {"alnum": string.digits + string.ascii_lowercase, "digits": string.digits}
SCHEDULES = ("none", "onecycle", "linear", "plateau")
DECODERS = ("greedy", "beam")
SPLITS = ("benchmark", "source", "kfold")


DURATION = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*(s|m|min|h)?\s*", re.IGNORECASE)
SECONDS_PER = {None: 1, "s": 1, "m": 60, "min": 60, "h": 3600}


def parse_duration(value: Any) -> float:
    """Seconds from a number or ``"90s"``, ``"8m"``, ``"1.5h"`` (a bare number is seconds)."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return float(value)
    match = DURATION.fullmatch(str(value))
    if not match:
        raise ValueError(f"{value!r} is not a duration: use seconds or e.g. 90s, 8m, 1.5h")
    unit = match[2].lower() if match[2] else None
    return float(match[1]) * SECONDS_PER[unit]


def positive_duration(text: str, what: str) -> float:
    """Seconds of a duration that must be more than zero."""
    seconds = parse_duration(text)
    if seconds <= 0:
        raise ValueError(f"{what} {text}: give a positive duration (leave it out for none)")
    return seconds


def format_duration(seconds: float) -> str:
    """240 -> "4 min", 90 -> "1.5 min", 30 -> "30 s", 7200 -> "2 h"."""
    if seconds >= 3600:
        return f"{seconds / 3600:.3g} h"
    if seconds >= 60:
        return f"{seconds / 60:.3g} min"
    return f"{seconds:.3g} s"


# hyperparameters given as text in another form than their type's (``budget=8m``)
PARSERS = {"budget": parse_duration}


def check_model_hparams(hp: dict[str, Any]) -> None:
    """The model keywords every approach shares a meaning for: dropouts and widths."""
    for key, value in hp.items():
        if "dropout" in key and not 0 <= value < 1:
            raise ValueError(f"{key}={value!r} is out of range: use [0, 1)")
        if key in ("hidden", "seq_hidden", "layers") and value < 1:
            raise ValueError(f"{key}={value!r} is out of range: use >= 1")
