"""Source 001: the CRNN of the CRNN paper (Shi et al. 2015) on 32-pixel-high grayscale, CTC."""

from __future__ import annotations

from torch import nn

from bench.approaches.layers import Io, builder, conv, conv_block, recurrent_head
from bench.approaches.recipes import SOURCE_001_CTC, source_001_training
from bench.approaches.registry import Approach, register
from bench.approaches.spaces import GRAD_CLIP, space


def paper_convs(channels: int) -> nn.Sequential:
    """Source 001's layer list: 1x32xW -> 512x1x(W/4 - 1)."""
    return nn.Sequential(
        *conv_block(channels, 64, pool=2),
        *conv_block(64, 128, pool=2),
        *conv_block(128, 256),
        *conv_block(256, 256, pool=(2, 1)),
        *conv_block(256, 512, norm=True),
        *conv_block(512, 512, norm=True),
        nn.MaxPool2d((2, 1)),
        conv(512, 512, kernel=2, padding=0),
    )


@builder
def build(io: Io, *, hidden: int) -> nn.Module:
    return recurrent_head(paper_convs(io.channels), io, hidden)


register(
    Approach(
        name="crnn",
        source="001",
        codec="ctc",
        summary="CRNN of the CRNN paper: 7 convs + 2-layer BiLSTM on 1x32x100 (24 steps), CTC",
        build=build,
        model=dict(hidden=256),
        train=source_001_training(
            "crnn", width=100, lr=0.08, batch_size=8, epochs=60, **SOURCE_001_CTC
        ),
        search_space=space(
            lr=(0.01, 1.0), batch_size=[8, 16, 32, 64], grad_clip=GRAD_CLIP, hidden=[128, 256]
        ),
    )
)
