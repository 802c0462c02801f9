"""Source 000, first approach: a CNN whose output is L x C (one classifier per position)."""

from __future__ import annotations

from timm.layers import SelectAdaptivePool2d
from torch import nn

from bench.approaches.layers import Positions, fastai_init, load_fastai_stem, timm_body
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
) -> nn.Module:
    """timm body + fastai's ``create_head``: concat pool, BN, dropout, Linear(2F, 512), ReLU, BN,
    dropout, Linear(512, L*C); its linear layers have no bias (a BN precedes each), and the head,
    like a body trained from scratch, gets fastai's initialisation."""
    body = timm_body(backbone, pretrained, channels)
    if not pretrained:
        fastai_init(body)  # xresnet's own init_cnn
    if fastai_stem:
        load_fastai_stem(body)
    features = 2 * body.num_features
    head = nn.Sequential(
        SelectAdaptivePool2d(pool_type="catavgmax", flatten=True),
        nn.BatchNorm1d(features),
        nn.Dropout(dropout / 2),
        nn.Linear(features, 512, bias=False),
        nn.ReLU(inplace=True),
        nn.BatchNorm1d(512),
        nn.Dropout(dropout),
        nn.Linear(512, max_len * num_classes, bias=False),
        Positions(max_len),
    )
    return nn.Sequential(body, fastai_init(head))


def search_space(trial) -> dict:
    return {
        "lr": trial.suggest_float("lr", 5e-4, 1e-2, log=True),
        "weight_decay": trial.suggest_float("weight_decay", 1e-4, 0.1, log=True),
        "dropout": trial.suggest_float("dropout", 0.0, 0.6),
        "batch_size": trial.suggest_categorical("batch_size", [8, 16, 32]),
        "label_smoothing": trial.suggest_float("label_smoothing", 0.0, 0.2),
    }


register(
    Approach(
        name="multihead",
        source="000",
        codec="ce",
        summary="timm CNN (resnet34d ~ xresnet34), pooled head emitting L x C, label-smoothing CE",
        build=build,
        train={**SOURCE_000_TRAINING, "label_smoothing": 0.1},
        model=dict(backbone="resnet34d", pretrained=False, fastai_stem=False, dropout=0.5),
        search_space=search_space,
    )
)
