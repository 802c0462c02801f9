"""Source 001: CE-CRNN, a CRNN whose L output steps are trained with plain cross-entropy."""

from __future__ import annotations

from torch import nn

from bench.approaches.layers import Io, builder, conv, conv_block, recurrent_head
from bench.approaches.recipes import source_001_training
from bench.approaches.registry import Approach, register
from bench.approaches.spaces import space


@builder
def build(io: Io, *, hidden: int, dropout: float) -> nn.Module:
    convs = nn.Sequential(  # 1x32x128 -> 512x1x5: exactly one step per character
        *conv_block(io.channels, 64, pool=2),
        *conv_block(64, 128, pool=2),
        *conv_block(128, 256, pool=2),
        *conv_block(256, 512, kernel=(3, 5), norm=True),
        *conv_block(512, 512, kernel=(3, 5), norm=True),
        nn.MaxPool2d(2),
        conv(512, 512, kernel=2, padding=0),
    )
    # other label lengths or widths: the columns are pooled to max_len positions
    return recurrent_head(convs, io, hidden, dropout, steps=io.max_len)


register(
    Approach(
        name="ce-crnn",
        source="001",
        codec="ce",
        summary="source 001's CE-CRNN: convs to 5 columns of 1x32x128, 2-layer BiLSTM, CE",
        build=build,
        model=dict(hidden=256, dropout=0.2),
        train=source_001_training(
            "ce-crnn", width=128, optimizer="adam", lr=4e-5, batch_size=16, epochs=30
        ),
        search_space=space(
            lr=(1e-5, 1e-3), batch_size=[8, 16, 32], dropout=(0.0, 0.5), hidden=[128, 256]
        ),
    )
)
