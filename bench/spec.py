"""A run defined once: a :class:`Recipe` (approach, dataset, fixed hyperparameters, how to run),
resolved and checked when made, makes each run's frozen :class:`RunSpec` (seed, fold, a trial's
parameters). The CLI and suites make recipes; tuning, suites and training below them only ask a
recipe for specs and read specs.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from torch import nn

from bench.approaches import get_approach
from bench.data import Dataset, load_dataset
from bench.hparams import TrainConfig
from bench.options import resolve_device, resolve_graphs, resolve_precision

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

    cfg: TrainConfig = field(init=False, repr=False, compare=False)  # from hparams, made once

    def __post_init__(self) -> None:
        object.__setattr__(self, "cfg", TrainConfig.from_hparams(self.hparams))

    @property
    def source(self) -> str:
        return get_approach(self.approach).source

    def entries(self) -> dict[str, Any]:
        """The spec's fields (its ``cfg`` is made from ``hparams``, not one of them)."""
        return {f.name: getattr(self, f.name) for f in fields(self) if f.init}

    @property
    def digest(self) -> str:
        """The run key: every field and the code; names the checkpoint."""
        text = json.dumps(self.entries(), sort_keys=True, default=str)
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
        run = {k: v for k, v in self.entries().items() if k != "hparams"}
        return {**self.hparams, **run, "source": self.source, "run_key": self.digest}


@dataclass(frozen=True)
class Recipe:
    """What a family of runs shares, checked when made (:meth:`of`): the approach, the dataset
    (its name, fingerprint and split seed; where to load it from), fixed hyperparameters and how
    to run. :meth:`spec` makes a run's spec from a seed, a fold and a trial's parameters (fixed
    ones win); plain values, so worker processes receive it whole."""

    approach: str
    dataset: str
    fingerprint: str
    data_dir: str | None = None
    split_seed: int = 0
    skip_bad: bool = False
    fixed: tuple[tuple[str, Any], ...] = ()  # hyperparameters every run of the recipe has
    device: str = "auto"
    precision: str = "auto"
    compile: bool = False
    graphs: str = "auto"

    @classmethod
    def of(
        cls,
        approach: str,
        dataset: Dataset,
        fixed: Mapping[str, Any] | None = None,
        data_dir: str | Path | None = None,
        **how: Any,
    ) -> Recipe:
        """The recipe of ``approach`` on a loaded ``dataset``; ``how``: device, precision,
        compile, graphs. Unknown hyperparameters, wrong types and out-of-range values, and a
        device this machine lacks, are errors now, before any work."""
        recipe = cls(
            approach=approach,
            dataset=dataset.name,
            fingerprint=dataset.source.fingerprint,
            data_dir=str(data_dir) if data_dir else None,
            split_seed=dataset.split_seed,
            skip_bad=dataset.skip_bad,
            fixed=tuple((fixed or {}).items()),
            **how,
        )
        recipe.hparams()
        resolve_precision(recipe.precision, resolve_device(recipe.device))
        return recipe

    def with_fixed(self, **more: Any) -> Recipe:
        """The same recipe with more fixed hyperparameters (checked)."""
        recipe = replace(self, fixed=tuple({**dict(self.fixed), **more}.items()))
        recipe.hparams()
        return recipe

    def hparams(self, params: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """Every hyperparameter of a run with ``params`` (a trial's, or a study's best), resolved:
        the approach's defaults, then ``params``, then the fixed ones."""
        return resolve_hparams(self.approach, {**(params or {}), **dict(self.fixed)})

    def load_dataset(self) -> Dataset:
        """The dataset the recipe was made for; one whose files changed since is an error."""
        dataset = load_dataset(
            self.dataset, data_dir=self.data_dir, split_seed=self.split_seed, skip_bad=self.skip_bad
        )
        if dataset.source.fingerprint != self.fingerprint:
            raise ValueError(f"{self.dataset}: its files changed since the run was set up")
        return dataset

    def folds(self) -> range:
        """The folds of the recipe's split: every fold of a k-fold split, else the one split."""
        hp = self.hparams()
        return range(hp["folds"]) if hp["split"] == "kfold" else range(1)

    def spec(
        self, params: Mapping[str, Any] | None = None, seed: int = 0, fold: int = 0
    ) -> RunSpec:
        """The spec of one run: resolved device, precision and graphs; the fold checked."""
        hparams = self.hparams(params)
        check_fold(fold, hparams)
        device = resolve_device(self.device)
        return RunSpec(
            approach=self.approach,
            hparams=hparams,
            dataset=self.dataset,
            fingerprint=self.fingerprint,
            split_seed=self.split_seed,
            seed=int(seed),
            fold=int(fold),
            device=device,
            precision=resolve_precision(self.precision, device),
            compile=bool(self.compile),
            graphs=resolve_graphs(self.graphs, device, hparams, self.compile),
            skip_bad=self.skip_bad,
            code=code_digest(self.approach),
        )


def resolve_hparams(approach: str, overrides: Mapping[str, Any]) -> dict[str, Any]:
    """The approach's defaults updated with ``overrides``, checked (unknown keys, types, ranges):
    where every run's hyperparameters are resolved."""
    return get_approach(approach).resolve(overrides)


def create_model(
    name: str, num_classes: int, max_len: int, **overrides: Any
) -> tuple[nn.Module, dict[str, Any]]:
    """Approach ``name``'s model, untrained, without a run; with its resolved hyperparameters."""
    hp = resolve_hparams(name, overrides)
    return get_approach(name).build_model(num_classes, max_len, hp), hp


def make_spec(
    approach: str,
    dataset: Dataset,
    overrides: Mapping[str, Any] | None = None,
    seed: int = 0,
    fold: int = 0,
    **how: Any,
) -> RunSpec:
    """One run's spec: ``Recipe.of(approach, dataset, overrides, **how).spec(seed=, fold=)``."""
    return Recipe.of(approach, dataset, overrides, **how).spec(seed=seed, fold=fold)


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
