"""Source 000, first approach: a CNN whose output is L x C (one classifier per position)."""

from __future__ import annotations

from timm.layers import SelectAdaptivePool2d
from torch import nn

from bench.approaches.layers import Io, Positions, builder, fastai_body, fastai_init
from bench.approaches.recipes import SOURCE_000_BODY, SOURCE_000_TRAINING
from bench.approaches.registry import Approach, register
from bench.approaches.spaces import WEIGHT_DECAY, space


@builder
def build(
    io: Io, *, backbone: str, pretrained: bool, fastai_stem: bool, dropout: float
) -> nn.Module:
    """timm body + fastai's ``create_head``: concat pool, BN, dropout, Linear(2F, 512), ReLU, BN,
    dropout, Linear(512, L*C); its linear layers have no bias (a BN precedes each), and the head,
    like a body trained from scratch, gets fastai's initialisation."""
    body = fastai_body(backbone, pretrained, fastai_stem, io.channels)
    features = 2 * body.num_features
    head = nn.Sequential(
        SelectAdaptivePool2d(pool_type="catavgmax", flatten=True),
        nn.BatchNorm1d(features),
        nn.Dropout(dropout / 2),
        nn.Linear(features, 512, bias=False),
        nn.ReLU(inplace=True),
        nn.BatchNorm1d(512),
        nn.Dropout(dropout),
        nn.Linear(512, io.max_len * io.num_classes, bias=False),
        Positions(io.max_len),
    )
    return nn.Sequential(body, fastai_init(head))


register(
    Approach(
        name="multihead",
        source="000",
        codec="ce",
        summary="timm CNN (resnet34d ~ xresnet34), pooled head emitting L x C, label-smoothing CE",
        build=build,
        model={**SOURCE_000_BODY, "dropout": 0.5},
        train={**SOURCE_000_TRAINING, "label_smoothing": 0.1},
        search_space=space(
            lr=(5e-4, 1e-2),
            weight_decay=WEIGHT_DECAY,
            dropout=(0.0, 0.6),
            batch_size=[8, 16, 32],
            label_smoothing=(0.0, 0.2),
        ),
    )
)
