"""A run defined once: :class:`RunSpec`, resolved and checked in one place.

CLI flags, suite files and Optuna's suggestions all end here; everything below (training,
checkpoints, MLflow params, result files, reports) reads the spec and nothing else.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.approaches import get_approach
from bench.hparams import TrainConfig
from bench.options import RunOptions, resolve_device, resolve_graphs, resolve_precision

# the modules whose code decides what every run computes (an approach's own module is added)
RUN_MODULES = (
    "bench.approaches.layers",
    "bench.approaches.recipes",
    "bench.codecs",
    "bench.data.augment",
    "bench.data.store",
    "bench.hparams",
    "bench.training.batching",
    "bench.training.graphs",
    "bench.training.loop",
    "bench.training.optim",
    "bench.training.trainer",
)


@dataclass(frozen=True)
class RunSpec:
    """Everything that changes a training's result.

    ``hparams`` holds every hyperparameter, resolved (the approach's defaults updated with the
    overrides); ``device`` and ``precision`` are resolved too (``cpu``/``cuda``, ``fp32``/``bf16``).
    """

    approach: str
    hparams: Mapping[str, Any] = field(repr=False)
    dataset: str
    fingerprint: str
    split_seed: int
    seed: int
    device: str
    precision: str
    fold: int = 0  # with split=kfold: the fold tested (0 .. folds-1); else 0
    compile: bool = False
    graphs: bool = False  # the training step is captured as CUDA graphs
    skip_bad: bool = False
    code: str = ""  # digest of the code that defines the run (see code_digest)

    @property
    def cfg(self) -> TrainConfig:
        return TrainConfig.from_hparams(self.hparams)

    @property
    def source(self) -> str:
        return get_approach(self.approach).source

    @property
    def digest(self) -> str:
        """The run key: every field and the code; names the checkpoint."""
        text = json.dumps(asdict(self), sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:20]

    @property
    def kfold(self) -> bool:
        return self.hparams["split"] == "kfold"

    @property
    def label(self) -> str:
        """``approach seed S [fold F] dataset``: the run's name, what tells runs apart first."""
        fold = f" fold {self.fold}" if self.kfold else ""
        return f"{self.approach} seed {self.seed}{fold} {self.dataset}"

    def params(self) -> dict[str, Any]:
        """The spec as MLflow params: hyperparameters by name, run settings beside them."""
        run = {k: v for k, v in asdict(self).items() if k != "hparams"}
        return {**self.hparams, **run, "source": self.source, "run_key": self.digest}


def make_spec(
    approach: str,
    dataset: Any,
    overrides: Mapping[str, Any] | None = None,
    seed: int = 0,
    options: RunOptions | None = None,
    fold: int = 0,
) -> RunSpec:
    """Resolve and check a run: hyperparameters (unknown keys, types, ranges), the fold (0 ..
    folds-1 with ``split=kfold``, else 0), device (``cuda`` without CUDA is an error), precision,
    graphs; ``dataset`` is a loaded :class:`~bench.data.Dataset`."""
    options = options or RunOptions()
    hparams = get_approach(approach).resolve(overrides)
    check_fold(fold, hparams)
    dev = resolve_device(options.device)
    return RunSpec(
        approach=approach,
        hparams=hparams,
        dataset=dataset.name,
        fingerprint=dataset.source.fingerprint,
        split_seed=dataset.split_seed,
        seed=int(seed),
        fold=int(fold),
        device=dev,
        precision=resolve_precision(options.precision, dev),
        compile=bool(options.compile),
        graphs=resolve_graphs(options.graphs, dev, hparams, options.compile),
        skip_bad=dataset.skip_bad,
        code=code_digest(approach),
    )


def check_fold(fold: int, hparams: Mapping[str, Any]) -> None:
    """A fold names a part of a k-fold split: ``0 <= fold < folds`` there, 0 elsewhere."""
    if hparams["split"] == "kfold":
        if not 0 <= fold < hparams["folds"]:
            raise ValueError(f"fold={fold} is out of range: use 0 to {hparams['folds'] - 1}")
    elif fold != 0:
        raise ValueError(f"fold={fold} needs split=kfold (the split is {hparams['split']})")


@functools.cache
def code_digest(approach: str) -> str:
    """sha256 of the source files of the approach's module and of :data:`RUN_MODULES`: an edit to
    any of them gives new run keys, so no checkpoint of older code is reused."""
    module = get_approach(approach).build.__module__
    digest = hashlib.sha256()
    for name in sorted({module, *RUN_MODULES}):
        path = Path(importlib.import_module(name).__file__)
        digest.update(name.encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]
