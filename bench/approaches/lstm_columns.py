"""Source 003: a stacked LSTM reading the image column by column, CTC."""

from __future__ import annotations

from torch import nn

from bench.approaches.layers import Recurrent, SequenceHead
from bench.approaches.registry import Approach, register


def build(
    num_classes: int,
    max_len: int,
    channels: int,
    height: int,
    width: int,
    *,
    hidden: int,
    layers: int,
    dropout: float,
    carry_state: bool,
) -> nn.Module:
    """Source 003's StackedLSTM; with ``carry_state`` the LSTM state passes from one training
    batch to the next within an epoch (``h = tuple(each.data for each in h)``)."""
    lstm = Recurrent(
        "lstm", channels * height, hidden, layers=layers, bidirectional=False, carry=carry_state
    )
    return SequenceHead(
        nn.Identity(), nn.Sequential(lstm, nn.Dropout(dropout), nn.Linear(hidden, num_classes))
    )


def search_space(trial) -> dict:
    return {
        "lr": trial.suggest_float("lr", 3e-3, 0.1, log=True),
        "momentum": trial.suggest_float("momentum", 0.8, 0.99),
        "batch_size": trial.suggest_categorical("batch_size", [32, 64, 128]),
        "hidden": trial.suggest_categorical("hidden", [256, 512]),
        "dropout": trial.suggest_float("dropout", 0.0, 0.5),
    }


register(
    Approach(
        name="lstm-columns",
        source="003",
        codec="ctc",
        summary="source 003: 2-layer LSTM(512) over the 160 columns of a 1x60x160 image, CTC",
        build=build,
        train=dict(
            channels=1,
            height=60,
            width=160,
            holdout=1792 / 9984,  # random_split(dataset, [128 * 64, 28 * 64])
            mean=(0.89099,),
            std=(0.14788,),
            optimizer="sgd",
            lr=0.01,
            momentum=0.9,
            batch_size=64,
            epochs=30,
        ),
        model=dict(hidden=512, layers=2, dropout=0.5, carry_state=True),
        search_space=search_space,
    )
)
