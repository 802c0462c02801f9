"""Source 001: the CRNN of the CRNN paper (Shi et al. 2015) on 32-pixel-high grayscale, CTC."""

from __future__ import annotations

from torch import nn

from bench.approaches.layers import conv, recurrent_head
from bench.approaches.recipes import SOURCE_001_HOLDOUT, SOURCE_001_INPUT
from bench.approaches.registry import Approach, register


def paper_convs(channels: int) -> nn.Sequential:
    """Source 001's layer list: 1x32xW -> 512x1x(W/4 - 1)."""
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
        source="001",
        codec="ctc",
        summary="CRNN of the CRNN paper: 7 convs + 2-layer BiLSTM on 1x32x100 (24 steps), CTC",
        build=build,
        train={
            **SOURCE_001_INPUT,
            "holdout": SOURCE_001_HOLDOUT["crnn"],
            "width": 100,
            "optimizer": "adadelta",
            "lr": 0.08,
            "batch_size": 8,
            "epochs": 60,
            "grad_clip": 3.0,  # its CTC trainer clips gradients at norm 3
        },
        model=dict(hidden=256),
        search_space=search_space,
    )
)
