"""A run defined once: :class:`RunSpec`, resolved and checked in one place.

CLI flags, suite files and Optuna's suggestions all end here; everything below (training,
checkpoints, MLflow params, result files, reports) reads the spec and nothing else.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
import sys
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.approaches import get_approach
from bench.hparams import TrainConfig

DEVICES = ("auto", "cpu", "cuda")
PRECISIONS = ("auto", "fp32", "bf16")
GRAPHS = ("auto", "on", "off")
# the modules whose code decides what every run computes (an approach's own module is added)
RUN_MODULES = (
    "bench.approaches.layers",
    "bench.approaches.recipes",
    "bench.codecs",
    "bench.data.augment",
    "bench.data.store",
    "bench.graphs",
    "bench.hparams",
    "bench.train",
)
_said: set[str] = set()  # reasons for training eagerly already printed


@dataclass(frozen=True)
class RunOptions:
    """How to run (as the command line or a suite asks; resolved into the spec by
    :func:`make_spec`): device, autocast precision, ``torch.compile``, CUDA graphs."""

    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    graphs: str = "auto"


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
    compile: bool = False
    graphs: bool = False  # the training step is captured as CUDA graphs (bench.graphs)
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

    def params(self) -> dict[str, Any]:
        """The spec as MLflow params: hyperparameters by name, run settings beside them."""
        run = {k: v for k, v in asdict(self).items() if k != "hparams"}
        return {**self.hparams, **run, "source": self.source, "run_key": self.digest}


def make_spec(
    approach: str,
    dataset: Any,
    overrides: Mapping[str, Any] | None = None,
    seed: int = 0,
    options: RunOptions = RunOptions(),
) -> RunSpec:
    """Resolve and check a run: hyperparameters (unknown keys, types, ranges), device (``cuda``
    without CUDA is an error), precision, graphs; ``dataset`` is a loaded
    :class:`~bench.data.Dataset`."""
    hparams = get_approach(approach).resolve(overrides)
    dev = resolve_device(options.device)
    return RunSpec(
        approach=approach,
        hparams=hparams,
        dataset=dataset.name,
        fingerprint=dataset.source.fingerprint,
        split_seed=dataset.split_seed,
        seed=int(seed),
        device=dev,
        precision=resolve_precision(options.precision, dev),
        compile=bool(options.compile),
        graphs=resolve_graphs(options.graphs, dev, hparams, options.compile),
        skip_bad=dataset.skip_bad,
        code=code_digest(approach),
    )


def resolve_device(device: str = "auto") -> str:
    import torch

    if device not in DEVICES:
        raise ValueError(f"device={device!r}: use {', '.join(DEVICES)}")
    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device == "cuda" and not torch.cuda.is_available():
        raise ValueError("--device cuda was asked for, but torch sees no CUDA device")
    return device


def resolve_precision(precision: str, device: str) -> str:
    """``auto``: bf16 autocast on CUDA, fp32 on CPU."""
    if precision not in PRECISIONS:
        raise ValueError(f"precision={precision!r}: use {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bf16" if device == "cuda" else "fp32"
    return precision


def graph_blocker(hparams: Mapping[str, Any], compile: bool) -> str | None:
    """Why a run's step cannot be captured, or None."""
    if hparams.get("carry_state"):
        return "carry_state keeps the recurrent state in Python between batches"
    if compile:
        return "torch.compile manages its own graphs"
    if hparams.get("optimizer") == "sgd":
        return "torch's SGD reads a tensor learning rate on the host (an item() call)"
    return None


def resolve_graphs(graphs: str, device: str, hparams: Mapping[str, Any], compile: bool) -> bool:
    """``auto``: on for CUDA where the run can be captured; ``on`` without CUDA is an error; a run
    that cannot be captured trains eagerly and says why, once."""
    if graphs not in GRAPHS:
        raise ValueError(f"graphs={graphs!r}: use {', '.join(GRAPHS)}")
    if graphs == "on" and device != "cuda":
        raise ValueError("graphs=on needs CUDA (the CPU path does not capture)")
    if graphs == "off" or device != "cuda":
        return False
    blocker = graph_blocker(hparams, compile)
    if blocker is not None:
        if blocker not in _said:
            _said.add(blocker)
            print(f"graphs: training eagerly: {blocker}", file=sys.stderr, flush=True)
        return False
    return True


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
