"""Trainer callbacks of the console."""

from __future__ import annotations

import sys
from collections.abc import Callable

from tqdm.auto import tqdm

from bench.spec import RunSpec

EpochCallback = Callable[[int, dict[str, float]], None]


class EpochLines:
    """Trainer callback: one line per epoch that stays (written above any progress bar), as
    timm's train script prints them."""

    def __init__(self, spec: RunSpec, name: str | None = None):
        self.name = name or spec.label
        self.epochs = spec.cfg.epochs
        self.budget = spec.cfg.budget

    def __call__(self, epoch: int, stats: dict[str, float]) -> None:
        of = "" if self.budget else f"/{self.epochs}"
        spent = (
            f", {stats['elapsed_seconds']:.0f}/{self.budget:.0f} s of the budget"
            if self.budget
            else ""
        )
        tqdm.write(
            f"{self.name} epoch {epoch + 1}{of}: train loss {stats['train_loss']:.4f}, "
            f"val loss {stats['val_loss']:.4f}, val seq acc {stats['val_seq_acc']:.2%}, "
            f"val CER {stats['val_cer']:.2%}, {stats['epoch_seconds']:.1f} s{spent}",
            file=sys.stdout,
        )
        sys.stdout.flush()
