"""Source 002: two convs, a linear map of each column, a two-layer BiGRU, CTC (blank 0)."""

from __future__ import annotations

from torch import nn

from bench.approaches.layers import Io, Recurrent, builder, conv, sequence_classifier, step_size
from bench.approaches.registry import Approach, register
from bench.approaches.spaces import space


@builder
def build(io: Io, *, seq_hidden: int, hidden: int, dropout: float, rnn_dropout: float) -> nn.Module:
    convs = nn.Sequential(  # 3x75x300 -> 64x18x75
        conv(io.channels, 128),
        nn.ReLU(),
        nn.MaxPool2d(2),
        conv(128, 64),
        nn.ReLU(),
        nn.MaxPool2d(2),
    )
    column = step_size(convs, io)
    gru = Recurrent("gru", seq_hidden, hidden, layers=2, dropout=rnn_dropout)
    return sequence_classifier(
        convs,
        io,
        nn.Linear(column, seq_hidden),
        nn.ReLU(),
        nn.Dropout(dropout),
        gru,
        size=gru.out_features,
    )


register(
    Approach(
        name="crnn-gru",
        source="002",
        codec="ctc",
        summary="source 002: conv-pool x2, Linear(1152, 64), 2-layer BiGRU(32), CTC",
        build=build,
        model=dict(seq_hidden=64, hidden=32, dropout=0.2, rnn_dropout=0.25),
        train=dict(
            channels=3,
            height=75,
            width=300,
            holdout=0.1,  # train_test_split(..., test_size=0.1)
            mean=(0.485, 0.456, 0.406),
            std=(0.229, 0.224, 0.225),
            optimizer="adam",
            lr=3e-4,
            batch_size=8,
            epochs=200,
            schedule="plateau",
            plateau_factor=0.8,
            plateau_patience=5,
        ),
        search_space=space(
            lr=(1e-4, 3e-3),
            batch_size=[8, 16, 32],
            seq_hidden=[64, 128],
            hidden=[32, 64, 128],
            dropout=(0.0, 0.4),
        ),
    )
)
