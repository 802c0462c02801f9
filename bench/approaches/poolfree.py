"""Source 000, second approach: the same body without the global pool, a flatten-MLP head."""

from __future__ import annotations

from torch import nn

from bench.approaches.layers import Io, Positions, builder, fastai_body, output_shape
from bench.approaches.recipes import SOURCE_000_BODY, SOURCE_000_TRAINING
from bench.approaches.registry import Approach, register
from bench.approaches.spaces import WEIGHT_DECAY, space


@builder
def build(
    io: Io, *, backbone: str, pretrained: bool, fastai_stem: bool, dropout: float, hidden: int
) -> nn.Module:
    """Flatten, ReLU, dropout, Linear(C*H*W, hidden), ReLU, BN, dropout, Linear(hidden, L*C): the
    source's own ``nn.Sequential`` head (torch's default init) on ``create_body(xresnet34)``."""
    body = fastai_body(backbone, pretrained, fastai_stem, io.channels)
    flat = output_shape(body, io)[1:].numel()  # 512 x 2 x 7 = 7168 at 50x200
    head = nn.Sequential(
        nn.Flatten(),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(flat, hidden),
        nn.ReLU(inplace=True),
        nn.BatchNorm1d(hidden),
        nn.Dropout(dropout),
        nn.Linear(hidden, io.max_len * io.num_classes),
        Positions(io.max_len),
    )
    return nn.Sequential(body, head)


register(
    Approach(
        name="poolfree",
        source="000",
        codec="ce",
        summary="the multihead body with the global pool removed and a flatten-MLP head",
        build=build,
        model={**SOURCE_000_BODY, "dropout": 0.5, "hidden": 1000},
        train={**SOURCE_000_TRAINING, "label_smoothing": 0.1},
        search_space=space(
            lr=(5e-4, 1e-2),
            weight_decay=WEIGHT_DECAY,
            dropout=(0.0, 0.6),
            hidden=[256, 512, 1000, 2000],
            batch_size=[8, 16, 32],
        ),
    )
)
