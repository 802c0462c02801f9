"""What an evaluation and a training return."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from torch import nn

from bench import metrics
from bench.codecs import Codec
from bench.spec import RunSpec


@dataclass
class Evaluation:
    loss: float
    predictions: list[str]
    labels: list[str]
    files: list[str]

    @property
    def metrics(self) -> dict[str, float]:
        return {"loss": self.loss, **metrics.summarize(self.predictions, self.labels)}


@dataclass
class TrainResult:
    spec: RunSpec
    data: dict[str, Any]
    history: list[dict[str, float]]
    test: dict[str, float] | None  # None when the run evaluated validation only (a tuning trial)
    params: int
    flops: int
    train_seconds: float
    img_per_s: float
    inference: dict[str, float]
    predictions: list[dict[str, Any]] = field(repr=False)  # of the final evaluation's split
    model: nn.Module = field(repr=False)
    codec: Codec = field(repr=False)
    resumed_epochs: int = 0  # epochs taken from a checkpoint instead of trained here

    @property
    def approach(self) -> str:
        return self.spec.approach

    @property
    def hparams(self) -> dict[str, Any]:
        return dict(self.spec.hparams)

    def summary(self) -> dict[str, Any]:
        """The final metrics, as printed by the CLI and written to result files."""
        return {
            "approach": self.spec.approach,
            "source": self.spec.source,
            "dataset": self.spec.dataset,
            "seed": self.spec.seed,
            "device": self.spec.device,
            "precision": self.spec.precision,
            "budget": self.spec.cfg.budget,
            "epochs": len(self.history),
            "steps": int(self.history[-1]["steps"]) if self.history else 0,
            **{f"test_{k}": v for k, v in (self.test or {}).items()},
            "params": self.params,
            "flops": self.flops,
            "train_seconds": round(self.train_seconds, 1),
            "img_per_s": round(self.img_per_s, 1),
            **{k: round(v, 2) for k, v in self.inference.items()},
        }
