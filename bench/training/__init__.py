"""Training: :func:`build_trainer` makes a complete :class:`Trainer` from a run's spec (also for
``perf`` and the planner); :func:`train` runs the loop and returns a :class:`TrainResult`."""

from bench.errors import NonFiniteLossError
from bench.training.callbacks import EpochCallback, EpochLines
from bench.training.loop import train
from bench.training.results import Evaluation, TrainResult
from bench.training.trainer import EVAL_BATCH, Trainer, build_trainer, seed_everything

__all__ = [
    "EVAL_BATCH",
    "EpochCallback",
    "EpochLines",
    "Evaluation",
    "NonFiniteLossError",
    "TrainResult",
    "Trainer",
    "build_trainer",
    "seed_everything",
    "train",
]
