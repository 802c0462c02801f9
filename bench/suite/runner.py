"""Running a suite: per dataset and approach an Optuna study, then final trainings with the best
parameters, one per seed (the report and summary are made by the CLI).

Every unit of work lives in Optuna's storage: tuning trials in the approach's study, final
trainings as the enqueued trials of a second study (``.../final``), one per seed. A unit is
claimed by popping a waiting trial (a transaction in the database), so any number of workers can
share a suite, and a re-run of the same command redoes nothing that finished.
"""

from __future__ import annotations

import contextlib
import functools
import time
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from bench import interrupts
from bench.data import Dataset
from bench.orchestration import (
    BUSY,
    DONE,
    POLL_S,
    TAKE,
    StorageLock,
    claimed,
    counted,
    open_storage,
    trial_key,
    work_queue,
    worker_processes,
)
from bench.paths import cache_dir
from bench.spec import Recipe
from bench.suite.progress import Progress, WorkCounter
from bench.suite.schema import Suite
from bench.tracking.record import train_tracked
from bench.training import EpochLines
from bench.tune import TuneConfig, create_study, rounded, work


@dataclass
class Unit:
    """One (dataset, approach) of a suite: its tuning study and recipe, its final study and
    recipe (the best parameters come beneath the final recipe's fixed ones)."""

    suite: Suite
    tuning: Recipe
    final: Recipe
    storage: str
    tags: dict[str, Any] = field(default_factory=dict)  # on every final run (the plan's estimate)

    @property
    def dataset(self) -> str:
        return self.final.dataset

    @property
    def approach(self) -> str:
        return self.final.approach

    @property
    def study(self) -> str:
        return f"{self.suite.name}/{self.dataset}/{self.approach}"

    def tune_config(self, progress: bool = False) -> TuneConfig:
        return TuneConfig(
            recipe=self.tuning,
            trials=self.suite.trials,
            storage=self.storage,
            study=self.study,
            suite=self.suite.name,
            pruner=self.suite.pruner,
            sampler=self.suite.sampler,
            experiment=self.suite.experiment,
            progress=progress,
        )

    def best_params(self) -> tuple[dict[str, Any], str]:
        """The tuning study's best parameters (and where they came from)."""
        if self.suite.trials == 0:
            return {}, "seed defaults (no tuning)"
        study = create_study(self.tune_config())
        try:
            best = study.best_trial
        except ValueError:
            return {}, "seed defaults (no tuning trial completed)"
        attrs = best.user_attrs
        return dict(best.params), (
            f"trial {best.number} (val CER {attrs.get('val_cer', best.value):.2%}, "
            f"val seq acc {attrs.get('val_seq_acc', float('nan')):.2%})"
        )

    def final_study(self) -> optuna.Study:
        """The study whose trials are the final trainings, one enqueued per seed and fold
        (missing ones are added, so a suite can grow)."""
        name = f"{self.study}/final"
        storage = open_storage(self.storage)
        with StorageLock(self.storage):
            study = optuna.create_study(
                study_name=name, storage=storage, direction="maximize", load_if_exists=True
            )
            if "kind" not in study.user_attrs:  # bookkeeping, apart from the tuning studies
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                    study.set_metric_names(["test_seq_acc"])
                study.set_user_attr("kind", "final trainings (one trial per seed and fold)")
            present = {replicate(t) for t in study.get_trials(deepcopy=False)}
            for seed, fold in self.suite.replicates:
                if (seed, fold) not in present:
                    study.enqueue_trial({}, user_attrs={"seed": seed, "fold": fold})
        return study

    def work(self) -> tuple[tuple[int, bool], tuple[int, bool]]:
        """The work of one tuning trial and of one final training: (seconds of a budget, True)
        or (epochs, False) each."""
        return run_work(self.tuning.hparams()), run_work(self.final.hparams())


def run_work(hparams: dict[str, Any]) -> tuple[int, bool]:
    """What one run counts on the suite's bar: its budget's seconds (and True), else its epochs
    (and False)."""
    if hparams["budget"]:
        return round(hparams["budget"]), True
    return int(hparams["epochs"]), False


Replicate = tuple[int, int]  # (seed, fold) of a final training


def replicate(trial: optuna.trial.FrozenTrial) -> Replicate | None:
    """The (seed, fold) a final-study trial holds; None for a spare trial."""
    seed = trial.user_attrs.get("seed")
    return None if seed is None else (seed, trial.user_attrs.get("fold", 0))


def replicate_states(study: optuna.Study) -> dict[Replicate, str]:
    """Per (seed, fold) of a final study: complete, failed (with an error), or pending."""
    states: dict[Replicate, str] = {}
    for trial in study.get_trials(deepcopy=False):
        key = replicate(trial)
        if key is None:
            continue
        if trial.state == TrialState.COMPLETE:
            states[key] = "complete"
        elif counted(trial) and states.get(key) != "complete":
            states[key] = "failed"
        else:
            states.setdefault(key, "pending")
    return states


class SpareTrial(Exception):
    """A final-study trial that holds no replicate (made when another worker took the last
    one)."""


def run_finals(
    unit: Unit,
    best: dict[str, Any],
    callbacks: tuple = (),
    on_done: Callable[[Replicate, str, Any], None] | None = None,
    wait: bool = True,
) -> dict[Replicate, str]:
    """Train every pending (seed, fold) of ``unit`` with ``best``; returns each one's state.
    Without ``wait`` it returns as soon as every remaining one is claimed by other workers."""
    study = unit.final_study()

    @functools.cache
    def dataset() -> Dataset:  # loaded (and fingerprinted) once, and only if this worker trains
        return unit.final.load_dataset()

    def final(trial: optuna.Trial) -> float:
        key = replicate(trial)
        if key is None or replicate_states(study).get(key) == "complete":
            trial.set_user_attr("spare", True)
            raise SpareTrial
        seed, fold = key
        try:
            with claimed(trial, {"seed": seed, "fold": fold}, params={}):
                spec = unit.final.spec(best, seed=seed, fold=fold)
                result, run_id = train_tracked(
                    spec,
                    dataset(),
                    experiment=unit.suite.experiment,
                    tags={
                        "suite": unit.suite.name,
                        "kind": "final",
                        "optuna_trial": trial_key(study.study_name, trial.number),
                        "suite_file": unit.suite.path.name,
                        "suite_digest": unit.suite.digest,
                        **unit.tags,
                    },
                    callbacks=(*callbacks, EpochLines(spec)),
                    checkpoint_dir=cache_dir() / "checkpoints",
                    log_model=unit.suite.log_models,
                    progress=False,
                    state_tag="final_state",
                )
        except Exception as err:
            if on_done:
                on_done(key, "failed", err)
            raise
        trial.set_user_attr("run_id", run_id)
        if on_done:
            on_done(key, "complete", result)
        return result.test["seq_acc"]

    wanted = unit.suite.replicates

    def look(trials: list[optuna.trial.FrozenTrial]) -> str:
        states = replicate_states(study)
        if all(states.get(r) in ("complete", "failed") for r in wanted):
            return DONE
        return TAKE if any(t.state == TrialState.WAITING for t in trials) else BUSY

    work_queue(study, look, lambda _: study.optimize(final, n_trials=1, catch=(Exception,)), wait)
    states = replicate_states(study)
    return {r: states.get(r, "pending") for r in wanted}


def planned_work(units: list[Unit]) -> tuple[int, int, str]:
    """Total work of the suite, how much is done already (from Optuna's storage) and its unit:
    epochs, seconds where every run has a time budget."""
    total = done = 0
    budgeted: list[bool] = []  # per kind of run the suite has: a time budget or epochs
    for unit in units:
        (trial_epochs, trial_budget), (final_epochs, final_budget) = unit.work()
        budgeted += [trial_budget, final_budget] if unit.suite.trials else [final_budget]
        total += unit.suite.trials * trial_epochs + len(unit.suite.replicates) * final_epochs
        with contextlib.suppress(KeyError):
            study = optuna.load_study(study_name=unit.study, storage=open_storage(unit.storage))
            done += min(unit.suite.trials, sum(map(counted, study.trials))) * trial_epochs
        with contextlib.suppress(KeyError):
            final = optuna.load_study(
                study_name=f"{unit.study}/final", storage=open_storage(unit.storage)
            )
            finished = sum(v != "pending" for v in replicate_states(final).values())
            done += finished * final_epochs
    return (
        total,
        min(done, total),
        "s" if all(budgeted) else "epoch" if not any(budgeted) else "work",
    )


@dataclass
class SuiteOutcome:
    """What a suite run did: per unit the source of its parameters and each seed's state."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)


def run_suite(
    suite: Suite,
    recipes: dict[tuple[str, str], tuple[Recipe, Recipe]],
    storage: str,
    quiet: bool = False,
    workers: int = 1,
    gpus: Sequence[str] = (),
    tags: dict[str, Any] | None = None,
) -> SuiteOutcome:
    """Tune, then train the final seeds of every (dataset, approach); failures are collected,
    the rest goes on. Interrupting raises ``KeyboardInterrupt``; a re-run resumes. ``workers``
    > 1 starts that many processes in all (each with ``1/workers`` of the CPU threads).

    Any number of such calls (processes, machines) may share ``storage``: each pass over the
    units takes whatever work is left; a unit whose remaining work is all taken by others is
    visited again after the others, until every unit is done.
    """
    open_storage(storage)  # create the schema once
    units = [Unit(suite, *recipes[pair], storage, dict(tags or {})) for pair in suite.pairs]
    total, done, unit = planned_work(units)
    threads = max(1, torch.get_num_threads() // workers)
    with worker_processes(_worker, (units, threads), workers - 1, gpus):
        torch.set_num_threads(threads)
        progress = Progress(total, done, quiet, unit, lambda: planned_work(units)[1])
        try:
            return work_on(units, progress)
        finally:
            progress.close()


def work_on(units: list[Unit], progress: Progress) -> SuiteOutcome:
    outcome = SuiteOutcome()
    pending = [UnitRun(unit, progress, outcome) for unit in units]
    while pending:
        interrupts.check()
        pending = [run for run in pending if not run.step()]
        if pending:
            time.sleep(POLL_S)  # the rest is in other workers' hands: wait, look again
    return outcome


def _worker(units: list[Unit], threads: int) -> None:
    """An extra worker process of ``run_suite``: its log lines, no bar; Ctrl-C ends it quietly."""
    torch.set_num_threads(threads)
    with contextlib.suppress(KeyboardInterrupt):
        work_on(units, Progress(0, 0, quiet=True))


class UnitRun:
    """One worker's view of a unit: tuning first, then the final seeds."""

    def __init__(self, unit: Unit, progress: Progress, outcome: SuiteOutcome):
        self.unit, self.progress, self.outcome = unit, progress, outcome
        self.label = f"{unit.dataset} {unit.approach}"
        (self.trial_work, trial_seconds), (self.final_work, final_seconds) = unit.work()
        self.trial_counter = WorkCounter(progress, trial_seconds)
        self.final_counter = WorkCounter(progress, final_seconds)
        self.best: dict[str, Any] | None = None
        self.source = ""

    def trial_done(self, trial: optuna.trial.FrozenTrial) -> None:
        self.trial_counter.finish(self.trial_work)
        attrs = trial.user_attrs
        score = (
            f"val CER {attrs['val_cer']:.2%}, val seq acc {attrs['val_seq_acc']:.2%}"
            if "val_cer" in attrs
            else "no score"
        )
        self.progress.log(
            f"tune  {self.label} trial {trial.number}: {trial.state.name.lower()}, "
            f"{score} ({len(trial.intermediate_values)} epochs)"
        )

    def replicate_done(self, key: Replicate, state: str, detail: Any) -> None:
        self.final_counter.finish(self.final_work)
        seed, fold = key
        name = f"seed {seed}" + (f" fold {fold}" if self.unit.suite.folds else "")
        if state == "complete":
            self.progress.log(
                f"final {self.label} {name}: test seq acc {detail.test['seq_acc']:.2%}, "
                f"CER {detail.test['cer']:.2%} ({detail.train_seconds:.0f} s, "
                f"{len(detail.history)} epochs)"
            )
        else:
            self.progress.log(f"final {self.label} {name}: FAILED: {detail}")

    def step(self) -> bool:
        """Do the work that is free to take; returns whether the unit is finished."""
        unit = self.unit
        try:
            if unit.suite.trials and self.best is None:
                cfg = unit.tune_config()
                if not work(
                    cfg, callbacks=(self.trial_counter,), on_trial=self.trial_done, wait=False
                ):
                    return False
            if self.best is None:
                self.best, self.source = unit.best_params()
                self.progress.log(
                    f"final {self.label}: parameters from {self.source}: "
                    f"{rounded(self.best) or 'defaults'}"
                )
            states = run_finals(
                unit,
                self.best,
                callbacks=(self.final_counter,),
                on_done=self.replicate_done,
                wait=False,
            )
        except KeyboardInterrupt:
            raise
        except Exception as err:  # one approach failing does not stop the suite
            if interrupts.received():  # a library turned the interruption into its own error
                raise KeyboardInterrupt from err
            self.outcome.failures.append(f"{self.label}: {type(err).__name__}: {err}")
            self.progress.log(f"FAILED {self.label}: {type(err).__name__}: {err}")
            return True
        if "pending" in states.values():
            return False
        if failed := [r for r, state in states.items() if state == "failed"]:
            self.outcome.failures.append(
                f"{self.label}: final training failed for (seed, fold) {failed}"
            )
        self.outcome.rows.append(
            {"dataset": unit.dataset, "approach": unit.approach, "params": self.source}
        )
        return True
