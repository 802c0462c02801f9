"""Checkpoints: a run's whole state after every epoch, written atomically, keyed by its spec."""

from __future__ import annotations

import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import torch

from bench.hparams import TrainConfig
from bench.spec import RunSpec
from bench.training.trainer import Trainer


def checkpoint_path(spec: RunSpec, folder: Path) -> Path:
    """``<approach>-<code digest>-<run key>.pt``: the code digest in the name lets ``cache prune``
    find the checkpoints of code that has changed since."""
    return Path(folder) / f"{spec.approach}-{spec.code}-{spec.digest}.pt"


@dataclass
class LoopState:
    """What a checkpoint restores besides the trainer's weights: random streams and progress."""

    order_rng: torch.Generator
    history: list[dict[str, float]] = field(default_factory=list)
    train_seconds: float = 0.0

    @property
    def steps(self) -> int:
        return int(self.history[-1]["steps"]) if self.history else 0

    @property
    def images(self) -> int:
        return int(self.history[-1]["images"]) if self.history else 0

    def finished(self, cfg: TrainConfig) -> bool:
        """All epochs trained, or the time budget used up."""
        return len(self.history) >= cfg.epochs or 0 < cfg.budget <= self.train_seconds


def save_checkpoint(path: Path, trainer: Trainer, loop: LoopState) -> None:
    """Write atomically, so an interrupted save never leaves a broken checkpoint."""
    state = {
        "model": trainer.model.state_dict(),
        "optimizer": trainer.optimizer.state_dict(),
        "schedule": trainer.schedule.state_dict() if trainer.schedule is not None else None,
        "order_rng": loop.order_rng.get_state(),
        "augment_rng": trainer.batcher.generator.get_state(),
        "torch_rng": torch.get_rng_state(),
        "history": loop.history,
        "train_seconds": loop.train_seconds,
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
    os.close(fd)
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path, trainer: Trainer, loop: LoopState) -> None:
    state = torch.load(path, map_location=trainer.device, weights_only=False)
    trainer.model.load_state_dict(state["model"])
    trainer.optimizer.load_state_dict(state["optimizer"])
    if trainer.schedule is not None:
        trainer.schedule.load_state_dict(state["schedule"])
    loop.order_rng.set_state(state["order_rng"])
    generator = trainer.batcher.generator
    generator.set_state(state["augment_rng"].to(generator.get_state().device))
    torch.set_rng_state(state["torch_rng"])
    loop.history, loop.train_seconds = state["history"], state["train_seconds"]
    if trainer.static is not None:
        trainer.static.reload()
