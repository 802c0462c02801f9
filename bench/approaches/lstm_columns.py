"""Source 003: a stacked LSTM reading the image column by column, CTC."""

from __future__ import annotations

from torch import nn

from bench.approaches.layers import Io, Recurrent, builder, sequence_classifier
from bench.approaches.registry import Approach, register
from bench.approaches.spaces import space


@builder
def build(io: Io, *, hidden: int, layers: int, dropout: float, carry_state: bool) -> nn.Module:
    """Source 003's StackedLSTM; with ``carry_state`` the LSTM state passes from one training
    batch to the next within an epoch (``h = tuple(each.data for each in h)``)."""
    size = io.channels * io.height
    lstm = Recurrent("lstm", size, hidden, layers=layers, bidirectional=False, carry=carry_state)
    return sequence_classifier(nn.Identity(), io, lstm, nn.Dropout(dropout), size=hidden)


register(
    Approach(
        name="lstm-columns",
        source="003",
        codec="ctc",
        summary="source 003: 2-layer LSTM(512) over the 160 columns of a 1x60x160 image, CTC",
        build=build,
        model=dict(hidden=512, layers=2, dropout=0.5, carry_state=True),
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
        search_space=space(
            lr=(3e-3, 0.1),
            momentum=(0.8, 0.99),
            batch_size=[32, 64, 128],
            hidden=[256, 512],
            dropout=(0.0, 0.5),
        ),
    )
)
