"""Source 001: the modified CRNN, strided convolutions instead of the late max-pools (10 steps)."""

from __future__ import annotations

from torch import nn

from bench.approaches.layers import conv, recurrent_head
from bench.approaches.recipes import SOURCE_001_HOLDOUT, SOURCE_001_INPUT
from bench.approaches.registry import Approach, register


def build(
    num_classes: int, max_len: int, channels: int, height: int, width: int, *, hidden: int
) -> nn.Module:
    convs = nn.Sequential(  # 1x32x176 -> 256x1x10
        conv(channels, 64),
        nn.MaxPool2d(2, 2),
        nn.ReLU(),
        conv(64, 128, stride=2),
        nn.ReLU(),
        nn.BatchNorm2d(128),
        conv(128, 256, stride=2),
        nn.ReLU(),
        nn.BatchNorm2d(256),
        conv(256, 256, stride=2),
        nn.ReLU(),
        nn.BatchNorm2d(256),
        conv(256, 256, kernel=2, padding=0),
    )
    return recurrent_head(convs, channels, height, width, num_classes, hidden)


def search_space(trial) -> dict:
    return {
        "lr": trial.suggest_float("lr", 0.05, 2.0, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [16, 32, 64, 128]),
        "grad_clip": trial.suggest_categorical("grad_clip", [1.0, 3.0, 10.0]),
        "hidden": trial.suggest_categorical("hidden", [128, 256]),
    }


register(
    Approach(
        name="crnn-modified",
        source="001",
        codec="ctc",
        summary="source 001's modified CRNN: strided convs, 10 steps of 1x32x176, BiLSTM, CTC",
        build=build,
        train={
            **SOURCE_001_INPUT,
            "holdout": SOURCE_001_HOLDOUT["crnn-modified"],
            "width": 176,
            "optimizer": "adadelta",
            "lr": 1.2,
            "batch_size": 128,
            "epochs": 40,
            "grad_clip": 3.0,
        },
        model=dict(hidden=256),
        search_space=search_space,
    )
)
