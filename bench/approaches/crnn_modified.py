"""Source 001: the modified CRNN, strided convolutions instead of the late max-pools (10 steps)."""

from __future__ import annotations

from torch import nn

from bench.approaches.layers import Io, builder, conv, conv_block, recurrent_head
from bench.approaches.recipes import SOURCE_001_CTC, source_001_training
from bench.approaches.registry import Approach, register
from bench.approaches.spaces import GRAD_CLIP, space


@builder
def build(io: Io, *, hidden: int) -> nn.Module:
    convs = nn.Sequential(  # 1x32x176 -> 256x1x10
        *conv_block(io.channels, 64, pool=2),
        *conv_block(64, 128, stride=2, norm=True),
        *conv_block(128, 256, stride=2, norm=True),
        *conv_block(256, 256, stride=2, norm=True),
        conv(256, 256, kernel=2, padding=0),
    )
    return recurrent_head(convs, io, hidden)


register(
    Approach(
        name="crnn-modified",
        source="001",
        codec="ctc",
        summary="source 001's modified CRNN: strided convs, 10 steps of 1x32x176, BiLSTM, CTC",
        build=build,
        model=dict(hidden=256),
        train=source_001_training(
            "crnn-modified", width=176, lr=1.2, batch_size=128, epochs=40, **SOURCE_001_CTC
        ),
        search_space=space(
            lr=(0.05, 2.0), batch_size=[16, 32, 64, 128], grad_clip=GRAD_CLIP, hidden=[128, 256]
        ),
    )
)
