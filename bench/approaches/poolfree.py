"""Source 000, second approach: the same body without the global pool, a flatten-MLP head."""

from __future__ import annotations

from torch import nn

from bench.approaches.layers import (
    Positions,
    fastai_init,
    load_fastai_stem,
    output_shape,
    timm_body,
)
from bench.approaches.recipes import SOURCE_000_TRAINING
from bench.approaches.registry import Approach, register


def build(
    num_classes: int,
    max_len: int,
    channels: int,
    height: int,
    width: int,
    *,
    backbone: str,
    pretrained: bool,
    fastai_stem: bool,
    dropout: float,
    hidden: int,
) -> nn.Module:
    """Flatten, ReLU, dropout, Linear(C*H*W, hidden), ReLU, BN, dropout, Linear(hidden, L*C): the
    source's own ``nn.Sequential`` head (torch's default init) on ``create_body(xresnet34)``."""
    body = timm_body(backbone, pretrained, channels)
    if not pretrained:
        fastai_init(body)  # xresnet's own init_cnn
    if fastai_stem:
        load_fastai_stem(body)
    flat = output_shape(body, channels, height, width)[1:].numel()  # 512 x 2 x 7 = 7168 at 50x200
    head = nn.Sequential(
        nn.Flatten(),
        nn.ReLU(),
        nn.Dropout(dropout),
        nn.Linear(flat, hidden),
        nn.ReLU(inplace=True),
        nn.BatchNorm1d(hidden),
        nn.Dropout(dropout),
        nn.Linear(hidden, max_len * num_classes),
        Positions(max_len),
    )
    return nn.Sequential(body, head)


def search_space(trial) -> dict:
    return {
        "lr": trial.suggest_float("lr", 5e-4, 1e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-4, 0.1, log=True),
        "dropout": trial.suggest_float("dropout", 0.0, 0.6),
        "hidden": trial.suggest_categorical("hidden", [256, 512, 1000, 2000]),
        "batch_size": trial.suggest_categorical("batch_size", [8, 16, 32]),
    }


register(
    Approach(
        name="poolfree",
        source="000",
        codec="ce",
        summary="the multihead body with the global pool removed and a flatten-MLP head",
        build=build,
        train={**SOURCE_000_TRAINING, "label_smoothing": 0.1},
        model=dict(
            backbone="resnet34d", pretrained=False, fastai_stem=False, dropout=0.5, hidden=1000
        ),
        search_space=search_space,
    )
)
