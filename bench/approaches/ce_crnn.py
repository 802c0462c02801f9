"""Source 001: CE-CRNN, a CRNN whose L output steps are trained with plain cross-entropy."""

from __future__ import annotations

from torch import nn

from bench.approaches.layers import conv, recurrent_head
from bench.approaches.recipes import SOURCE_001_HOLDOUT, SOURCE_001_INPUT
from bench.approaches.registry import Approach, register


def build(
    num_classes: int,
    max_len: int,
    channels: int,
    height: int,
    width: int,
    *,
    hidden: int,
    dropout: float,
) -> nn.Module:
    convs = nn.Sequential(  # 1x32x128 -> 512x1x5: exactly one step per character
        conv(channels, 64),
        nn.MaxPool2d(2, 2),
        nn.ReLU(),
        conv(64, 128),
        nn.MaxPool2d(2, 2),
        nn.ReLU(),
        conv(128, 256),
        nn.MaxPool2d(2),
        nn.ReLU(),
        conv(256, 512, kernel=(3, 5)),
        nn.ReLU(),
        nn.BatchNorm2d(512),
        conv(512, 512, kernel=(3, 5)),
        nn.ReLU(),
        nn.BatchNorm2d(512),
        nn.MaxPool2d(2),
        conv(512, 512, kernel=2, padding=0),
    )
    # other label lengths or widths: the columns are pooled to max_len positions
    return recurrent_head(
        convs, channels, height, width, num_classes, hidden, dropout, steps=max_len
    )


def search_space(trial) -> dict:
    return {
        "lr": trial.suggest_float("lr", 1e-5, 1e-3, log=True),
        "batch_size": trial.suggest_categorical("batch_size", [8, 16, 32]),
        "dropout": trial.suggest_float("dropout", 0.0, 0.5),
        "hidden": trial.suggest_categorical("hidden", [128, 256]),
    }


register(
    Approach(
        name="ce-crnn",
        source="001",
        codec="ce",
        summary="source 001's CE-CRNN: convs to 5 columns of 1x32x128, 2-layer BiLSTM, CE",
        build=build,
        train={
            **SOURCE_001_INPUT,
            "holdout": SOURCE_001_HOLDOUT["ce-crnn"],
            "width": 128,
            "optimizer": "adam",
            "lr": 4e-5,
            "batch_size": 16,
            "epochs": 30,
        },
        model=dict(hidden=256, dropout=0.2),
        search_space=search_space,
    )
)
