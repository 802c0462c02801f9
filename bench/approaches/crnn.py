"""Seed 001: the CRNN of the CRNN paper (Shi et al. 2015) on 32-pixel-high grayscale, CTC."""

from __future__ import annotations

from torch import nn

from bench.approaches.layers import Recurrent, SequenceHead, conv, output_shape
from bench.approaches.registry import Approach, register

# seed 001 feeds raw 0..255 grayscale floats; its CTC trainer clips gradients at norm 3
SEED_001_INPUT = dict(channels=1, height=32, mean=(0.0,), std=(1 / 255,))


def paper_convs(channels: int) -> nn.Sequential:
    """Seed 001's layer list: 1x32xW -> 512x1x(W/4 - 1)."""
    return nn.Sequential(
        conv(channels, 64),
        nn.MaxPool2d(2, 2),
        nn.ReLU(),
        conv(64, 128),
        nn.MaxPool2d(2, 2),
        nn.ReLU(),
        conv(128, 256),
        nn.ReLU(),
        conv(256, 256),
        nn.MaxPool2d((2, 1)),
        nn.ReLU(),
        conv(256, 512),
        nn.ReLU(),
        nn.BatchNorm2d(512),
        conv(512, 512),
        nn.ReLU(),
        nn.BatchNorm2d(512),
        nn.MaxPool2d((2, 1)),
        conv(512, 512, kernel=2, padding=0),
    )


def recurrent_head(
    features: nn.Module,
    channels: int,
    height: int,
    width: int,
    num_classes: int,
    hidden: int,
    dropout: float = 0.0,
    steps: int | None = None,
) -> nn.Module:
    """Seed 001's recurrent part: a 2-layer BiLSTM over the columns and a linear classifier.

    ``steps`` pools the columns to a fixed count (CE-CRNN reads exactly L positions).
    """
    if steps is not None and output_shape(features, channels, height, width)[-1] != steps:
        features = nn.Sequential(features, nn.AdaptiveAvgPool2d((None, steps)))
    _, c, h, _ = output_shape(features, channels, height, width)
    rnn = Recurrent("lstm", c * h, hidden, layers=2, dropout=dropout)
    return SequenceHead(features, nn.Sequential(rnn, nn.Linear(rnn.out_features, num_classes)))


def build(
    num_classes: int, max_len: int, channels: int, height: int, width: int, *, hidden: int
) -> nn.Module:
    return recurrent_head(paper_convs(channels), channels, height, width, num_classes, hidden)


def search_space(trial) -> dict:
    return {
        "lr": trial.suggest_float("lr", 0.01, 1.0, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [8, 16, 32, 64]),
        "grad_clip": trial.suggest_categorical("grad_clip", [1.0, 3.0, 10.0]),
        "hidden": trial.suggest_categorical("hidden", [128, 256]),
    }


register(
    Approach(
        name="crnn",
        seed="001",
        codec="ctc",
        summary="CRNN of the CRNN paper: 7 convs + 2-layer BiLSTM on 1x32x100 (24 steps), CTC",
        build=build,
        train={
            **SEED_001_INPUT,
            "width": 100,
            "optimizer": "adadelta",
            "lr": 0.08,
            "batch_size": 8,
            "epochs": 60,
            "grad_clip": 3.0,
        },
        model=dict(hidden=256),
        search_space=search_space,
    )
)
