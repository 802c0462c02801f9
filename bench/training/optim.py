"""Optimizers (with fastai's weight-decay groups) and learning-rate schedules."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from bench.hparams import TrainConfig

# optimizers whose momentum (Adam's beta1) the one-cycle schedule cycles, as fastai's does
CYCLED_MOMENTUM = ("adam", "adamw", "sgd")
PER_STEP = (torch.optim.lr_scheduler.OneCycleLR, torch.optim.lr_scheduler.LambdaLR)


def param_groups(model: nn.Module, cfg: TrainConfig) -> list[dict[str, Any]]:
    """All parameters decayed alike, or without ``wd_bn_bias`` (fastai's default) two groups: the
    parameters of normalisation layers and every module's ``bias`` are not decayed."""
    if cfg.wd_bn_bias or not cfg.weight_decay:
        return [{"params": list(model.parameters())}]
    exempt: set[int] = set()
    for module in model.modules():
        if isinstance(module, nn.modules.batchnorm._NormBase | nn.LayerNorm | nn.GroupNorm):
            exempt |= {id(p) for p in module.parameters(recurse=False)}
        elif isinstance(getattr(module, "bias", None), nn.Parameter):
            exempt.add(id(module.bias))
    params = list(model.parameters())
    return [
        {"params": [p for p in params if id(p) not in exempt]},
        {"params": [p for p in params if id(p) in exempt], "weight_decay": 0.0},
    ]


def make_optimizer(cfg: TrainConfig, model: nn.Module) -> torch.optim.Optimizer:
    params = param_groups(model, cfg)
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":  # fastai's Adam: decoupled weight decay, beta2 0.99, eps 1e-5
        return torch.optim.AdamW(
            params, lr=cfg.lr, betas=(0.9, 0.99), eps=1e-5, weight_decay=cfg.weight_decay
        )
    if cfg.optimizer == "sgd":
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    if cfg.optimizer == "adadelta":
        return torch.optim.Adadelta(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}; use adam, adamw, sgd or adadelta")


def make_schedule(cfg: TrainConfig, optimizer: torch.optim.Optimizer, steps_per_epoch: int):
    """Per-step schedules (one-cycle, linear) span ``epochs`` x ``steps_per_epoch`` steps; with a
    time budget :func:`schedule_position` moves them on the share of the budget used instead."""
    total_steps = max(1, cfg.epochs * steps_per_epoch)  # epochs=0: an untrained test
    if cfg.schedule == "onecycle":  # fastai's fit_one_cycle: cosine, div 25, final div 1e5
        return torch.optim.lr_scheduler.OneCycleLR(
            optimizer,
            max_lr=cfg.lr,
            total_steps=total_steps,
            pct_start=cfg.pct_start,
            div_factor=25.0,
            final_div_factor=1e5 / 25.0,  # torch divides the start lr, fastai the peak
            cycle_momentum=cfg.optimizer in CYCLED_MOMENTUM,
            base_momentum=0.85,
            max_momentum=0.95,
        )
    if cfg.schedule == "linear":  # decay to zero, as budgeted training recommends
        return torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1 - step / total_steps)
    if cfg.schedule == "plateau":
        return torch.optim.lr_scheduler.ReduceLROnPlateau(
            optimizer, factor=cfg.plateau_factor, patience=cfg.plateau_patience
        )
    if cfg.schedule == "none":
        return None
    raise ValueError(f"unknown schedule {cfg.schedule!r}; use onecycle, linear, plateau or none")


def schedule_position(cfg: TrainConfig, steps: int, seconds: float, total_steps: int) -> int:
    """Where a per-step schedule stands after ``steps`` steps and ``seconds`` of training: the
    steps taken, or with a budget the same share of its length as of the budget used, whichever
    is further; at most its length, so a budgeted run ends on the schedule's last value."""
    position = steps
    if cfg.budget:
        position = max(position, int(seconds / cfg.budget * total_steps))
    return min(position, total_steps)
