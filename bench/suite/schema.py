"""Suite files: ``experiments/<name>.yaml`` read and checked (keys, types, approaches, values)
before any work starts."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from bench.approaches import list_approaches
from bench.data import load_dataset
from bench.options import PRECISIONS
from bench.orchestration import parse_workers
from bench.spec import Recipe, resolve_hparams
from bench.tune import PRUNERS, SAMPLERS

SUITE_KEYS = {"description", "datasets", "approaches", "seeds", "split_seed", "set", "tuning"}
SUITE_KEYS |= {"final", "experiment", "log_models", "register", "workers", "precision", "folds"}
# the suite files, installed with the package (experiments/NAME.yaml link to them)
SHIPPED = Path(__file__).parents[1] / "suites"
STAGE_KEYS = {"tuning": {"trials", "set", "pruner", "sampler"}, "final": {"set"}}


class SuiteError(ValueError):
    """A suite file that cannot be run as written."""


@dataclass
class Suite:
    """A suite file, read and checked."""

    name: str
    path: Path
    pairs: list[tuple[str, str]]  # (dataset, approach): the suite's units, in order
    seeds: list[int]
    folds: int = 0  # >= 2: k-fold cross-validation, finals per seed and fold; 0: one split
    trials: int = 0
    tuning_set: dict[str, Any] = field(default_factory=dict)
    final_set: dict[str, Any] = field(default_factory=dict)
    common_set: dict[str, Any] = field(default_factory=dict)
    pruner: str = "median"
    sampler: str = "tpe"
    split_seed: int = 0
    experiment: str = ""
    log_models: bool = False
    register: bool = False  # the best approach's model per dataset into MLflow's registry
    workers: int | str = 1  # processes on one machine unless --workers says otherwise
    precision: str = "auto"  # autocast unless --precision says otherwise (reproduce: fp32)
    description: str = ""
    digest: str = ""

    @property
    def datasets(self) -> list[str]:
        return list(dict.fromkeys(d for d, _ in self.pairs))

    @property
    def approaches(self) -> list[str]:
        return list(dict.fromkeys(a for _, a in self.pairs))

    @property
    def replicates(self) -> list[tuple[int, int]]:
        """The final trainings of a unit: (seed, fold) for every seed and fold (fold 0 only
        without ``folds``)."""
        return [(seed, fold) for seed in self.seeds for fold in range(self.folds or 1)]

    def tuning_overrides(self) -> dict[str, Any]:
        return {**self.common_set, **self.tuning_set}

    def final_overrides(self) -> dict[str, Any]:
        """Fixed in every final training (a study's best parameters come beneath them)."""
        return {**self.common_set, **self.final_set}

    def recipes(
        self, data_dir: str | Path | None = None, **how: Any
    ) -> dict[tuple[str, str], tuple[Recipe, Recipe]]:
        """Per (dataset, approach) its tuning and its final recipe (``how``: device, precision,
        compile, graphs; the suite's precision unless given). Loads every dataset: a missing
        one stops the suite before any work."""
        how = {"precision": self.precision, **{k: v for k, v in how.items() if v is not None}}
        recipes = {}
        for name in self.datasets:
            dataset = load_dataset(name, data_dir=data_dir, split_seed=self.split_seed)
            for approach in (a for d, a in self.pairs if d == name):
                recipes[name, approach] = (
                    Recipe.of(approach, dataset, self.tuning_overrides(), data_dir, **how),
                    Recipe.of(approach, dataset, self.final_overrides(), data_dir, **how),
                )
        return recipes


def default_suites() -> list[str]:
    """What ``make bench`` runs: on CUDA the leaderboard, every approach cross-validated as its
    source published it and again tuned at an equal budget; else ``quick``."""
    import torch

    return ["leaderboard", "leaderboard-tuned"] if torch.cuda.is_available() else ["quick"]


def find_suite(name: str | Path) -> Path:
    """A YAML file, or the name of one in ``experiments/`` (here, else beside the package)."""
    path = Path(name)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise SuiteError(f"suite file {path} does not exist")
        return path
    for folder in (Path("experiments"), SHIPPED):
        if (folder / f"{name}.yaml").is_file():
            return folder / f"{name}.yaml"
    known = sorted(p.stem for p in SHIPPED.glob("*.yaml"))
    raise SuiteError(f"unknown suite {str(name)!r}; known: {', '.join(known) or 'none'}")


def load_suite(name: str | Path) -> Suite:
    """Read and check a suite: unknown keys, wrong types, unknown approaches, pruners and
    samplers and out-of-range hyperparameters are :class:`SuiteError` naming the file and key."""
    path = find_suite(name)
    text = path.read_text()
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as err:
        raise SuiteError(f"{path}: not valid YAML: {err}") from None
    if raw is None:
        raise SuiteError(f"{path}: the file is empty; see experiments/smoke.yaml for an example")
    if not isinstance(raw, dict):
        raise SuiteError(f"{path}: a suite is a mapping of keys ({', '.join(sorted(SUITE_KEYS))})")
    if unknown := set(raw) - SUITE_KEYS:
        raise SuiteError(f"{path}: unknown key(s) {sorted(unknown)}; allowed: {sorted(SUITE_KEYS)}")
    check = Checker(path)
    tuning, final = check.mapping(raw, "tuning"), check.mapping(raw, "final")
    folds = check.integer(raw, "folds", 0)
    common_set = check.mapping(raw, "set")
    if folds:
        if folds < 2:
            raise check.fail("folds", folds, "an integer >= 2 (or left out for one split)")
        if common_set.get("split", "kfold") != "kfold":
            raise SuiteError(f"{path}: folds: {folds} and set: {{split: {common_set['split']}}}")
        common_set = {**common_set, "split": "kfold", "folds": folds}
    elif common_set.get("split") == "kfold":  # set: {split: kfold} alone: every fold too
        folds = common_set.get("folds", 5)
    for stage, values in (("tuning", tuning), ("final", final)):
        if unknown := set(values) - STAGE_KEYS[stage]:
            raise SuiteError(f"{path}: unknown key(s) {sorted(unknown)} under {stage}:")
    suite = Suite(
        name=path.stem,
        path=path,
        pairs=check.pairs(raw),
        seeds=check.integers(raw, "seeds", [0]),
        folds=folds,
        trials=check.integer(tuning, "trials", 0, "tuning: trials"),
        tuning_set=check.mapping(tuning, "set", "tuning: set"),
        final_set=check.mapping(final, "set", "final: set"),
        common_set=common_set,
        pruner=check.choice(tuning, "pruner", "median", PRUNERS, "tuning: pruner"),
        sampler=check.choice(tuning, "sampler", "tpe", SAMPLERS, "tuning: sampler"),
        split_seed=check.integer(raw, "split_seed", 0),
        experiment=check.text(raw, "experiment", path.stem),
        log_models=check.boolean(raw, "log_models", False),
        register=check.boolean(raw, "register", False),
        workers=check.workers(raw),
        precision=check.choice(raw, "precision", "auto", PRECISIONS),
        description=check.text(raw, "description", ""),
        digest=hashlib.sha256(text.encode()).hexdigest()[:12],
    )
    if suite.register and not suite.log_models:
        raise SuiteError(
            f"{path}: register: true needs log_models: true (the registry holds logged models)"
        )
    for approach in suite.approaches:
        try:
            resolve_hparams(approach, suite.tuning_overrides())
            resolve_hparams(approach, suite.final_overrides())
        except (KeyError, ValueError) as err:
            raise SuiteError(f"{path}: {approach}: {err.args[0] if err.args else err}") from None
    return suite


class Checker:
    """Typed reads of a suite's values; a wrong type is a :class:`SuiteError` with an example."""

    def __init__(self, path: Path):
        self.path = path

    def fail(self, key: str, value: Any, wanted: str) -> SuiteError:
        return SuiteError(f"{self.path}: {key} must be {wanted}, got {value!r}")

    def workers(self, raw: dict) -> int | str:
        value = raw.get("workers", 1)
        try:
            return parse_workers(str(value))
        except ValueError:
            raise self.fail("workers", value, "a positive count or auto") from None

    def mapping(self, raw: dict, key: str, label: str | None = None) -> dict[str, Any]:
        value = raw.get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise self.fail(label or key, value, "a mapping, e.g. {trials: 5}")
        return dict(value)

    def pairs(self, raw: dict) -> list[tuple[str, str]]:
        """``datasets`` x ``approaches``, or ``datasets`` as a mapping of each dataset to its
        own approaches (``all`` or a list)."""
        datasets = raw.get("datasets")
        if isinstance(datasets, dict):
            if "approaches" in raw:
                raise SuiteError(
                    f"{self.path}: give approaches per dataset or at the top, not both"
                )
            return [
                (dataset, approach)
                for dataset, approaches in datasets.items()
                for approach in self.approaches({"approaches": approaches}, f"datasets: {dataset}")
            ]
        names = self.names(raw, "datasets", ["captcha-v2"])
        return [(d, a) for d in names for a in self.approaches(raw, "approaches")]

    def approaches(self, raw: dict, label: str) -> list[str]:
        value = raw.get("approaches", "all")
        return list_approaches() if value == "all" else self.names(raw, "approaches", label=label)

    def names(
        self, raw: dict, key: str, default: list[str] | None = None, label: str | None = None
    ) -> list[str]:
        value = raw.get(key)
        if value is None and default is not None:
            return default
        if isinstance(value, str):
            return [value]
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return list(value)
        raise self.fail(
            label or key, value, "a name or a non-empty list of names, e.g. [crnn, ce-crnn]"
        )

    def integers(self, raw: dict, key: str, default: list[int]) -> list[int]:
        value = raw.get(key, default)
        ok = isinstance(value, list) and value and all(is_int(v) for v in value)
        if not ok or len(set(value)) != len(value):
            raise self.fail(key, value, "a non-empty list of distinct integers, e.g. [0, 1, 2]")
        return list(value)

    def integer(self, raw: dict, key: str, default: int, label: str | None = None) -> int:
        value = raw.get(key, default)
        if not is_int(value) or value < 0:
            raise self.fail(label or key, value, "an integer >= 0")
        return value

    def choice(
        self, raw: dict, key: str, default: str, choices: tuple[str, ...], label: str = ""
    ) -> str:
        value = raw.get(key, default)
        if value not in choices:
            raise self.fail(label or key, value, " | ".join(choices))
        return value

    def text(self, raw: dict, key: str, default: str) -> str:
        value = raw.get(key) or default
        if not isinstance(value, str):
            raise self.fail(key, value, "a string")
        return value

    def boolean(self, raw: dict, key: str, default: bool) -> bool:
        value = raw.get(key, default)
        if not isinstance(value, bool):
            raise self.fail(key, value, "true or false")
        return value


def is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
