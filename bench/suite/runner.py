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
import pandas as pd
import torch
from optuna.trial import TrialState
from tqdm.auto import tqdm

from bench.config import cache_dir
from bench.data import Dataset, load_dataset
from bench.spec import RunOptions, make_spec
from bench.study import (
    POLL_S,
    StorageLock,
    claimed,
    counted,
    open_storage,
    trial_key,
    worker_processes,
)
from bench.suite.schema import Suite
from bench.tracking.record import train_tracked
from bench.training import EpochLines
from bench.tune import TuneConfig, create_study, rounded, work


@dataclass
class Unit:
    """One (dataset, approach) of a suite: its tuning study and its final study."""

    suite: Suite
    dataset: str
    approach: str
    storage: str
    run: RunOptions = field(default_factory=RunOptions)
    data_dir: str | None = None
    tags: dict[str, Any] = field(default_factory=dict)  # on every final run (the plan's estimate)

    @property
    def study(self) -> str:
        return f"{self.suite.name}/{self.dataset}/{self.approach}"

    def tune_config(self, progress: bool = False) -> TuneConfig:
        return TuneConfig(
            approach=self.approach,
            dataset=self.dataset,
            trials=self.suite.trials,
            storage=self.storage,
            study=self.study,
            suite=self.suite.name,
            pruner=self.suite.pruner,
            sampler=self.suite.sampler,
            overrides=self.suite.tuning_overrides(),
            run=self.run,
            data_dir=self.data_dir,
            split_seed=self.suite.split_seed,
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
        return (
            self.suite.work(self.approach, self.suite.tuning_overrides()),
            self.suite.work(self.approach, self.suite.final_overrides({})),
        )


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
    overrides = unit.suite.final_overrides(best)

    @functools.cache
    def dataset() -> Dataset:  # loaded (and fingerprinted) once, and only if this worker trains
        return load_dataset(unit.dataset, data_dir=unit.data_dir, split_seed=unit.suite.split_seed)

    def final(trial: optuna.Trial) -> float:
        key = replicate(trial)
        if key is None or replicate_states(study).get(key) == "complete":
            trial.set_user_attr("spare", True)
            raise SpareTrial
        seed, fold = key
        try:
            with claimed(trial, {"seed": seed, "fold": fold}, params={}):
                spec = make_spec(
                    unit.approach, dataset(), overrides, seed=seed, options=unit.run, fold=fold
                )
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
    while True:
        optuna.storages.fail_stale_trials(study)  # a dead worker's replicate is queued again
        states = replicate_states(study)
        if all(states.get(r) in ("complete", "failed") for r in wanted):
            return {r: states[r] for r in wanted}
        trials = study.get_trials(deepcopy=False)
        if not any(t.state == TrialState.WAITING for t in trials):
            if not wait:
                return {r: states.get(r, "pending") for r in wanted}
            time.sleep(POLL_S)  # other workers run the last seeds; wait for them or their failure
            continue
        study.optimize(final, n_trials=1, catch=(Exception,))


class Progress:
    """One bar over the suite's work (tuning trials and final trainings: epochs, or seconds of
    budgeted runs), plus a log line per finished unit; ``quiet`` keeps the lines and drops the
    bar."""

    def __init__(
        self,
        total: int,
        done: int,
        quiet: bool,
        unit: str = "epoch",
        recount: Callable[[], int] | None = None,
    ):
        self.bar = tqdm(total=total, initial=done, unit=unit, desc="suite", disable=quiet)
        self.quiet, self.recount = quiet, recount

    def add(self, work: int) -> None:
        """Work done, or work a unit did not need (a pruned trial)."""
        self.bar.update(work)

    def run_finished(self) -> None:
        """Catch up with the work other workers finished (``recount``: read from the storage),
        so the bar and its ETA cover the whole suite, not this process's share."""
        if self.recount is not None and (done := self.recount()) > self.bar.n:
            self.bar.update(done - self.bar.n)

    def log(self, line: str) -> None:
        if self.quiet:
            print(line, flush=True)
        else:
            self.bar.write(line)

    def close(self) -> None:
        self.bar.close()


class WorkCounter:
    """Trainer callback counting a run's work on the bar (epochs, or with ``seconds`` the seconds
    of its budget used); ``finish`` adds the planned work the run did not do (pruned early,
    failed, or resumed from a checkpoint)."""

    def __init__(self, progress: Progress, seconds: bool):
        self.progress, self.seconds, self.seen = progress, seconds, 0

    def __call__(self, epoch: int, stats: dict[str, float]) -> None:
        work = round(stats["elapsed_seconds"]) - self.seen if self.seconds else 1
        self.seen += work
        self.progress.add(work)

    def finish(self, planned: int) -> None:
        self.progress.add(max(0, planned - self.seen))
        self.progress.run_finished()
        self.seen = 0


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
    storage: str,
    run: RunOptions | None = None,
    data_dir: str | None = None,
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
    for name in suite.datasets:  # a missing dataset stops the suite before any training
        load_dataset(name, data_dir=data_dir, split_seed=suite.split_seed)
    open_storage(storage)  # create the schema once
    units = [
        Unit(suite, dataset, approach, storage, run or RunOptions(), data_dir, dict(tags or {}))
        for dataset, approach in suite.pairs
    ]
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


def summary_table(suite: Suite) -> pd.DataFrame:
    """The report's leaderboard numbers, one row per dataset and approach."""
    from bench.report.tables import leaderboard
    from bench.report.data import load_comparison

    comparison = load_comparison([suite.experiment], suite.name)
    frames = []
    for dataset, runs in comparison.runs.groupby("tags.dataset"):
        table = leaderboard(comparison, runs)
        frames.append(table.assign(dataset=dataset))
    table = pd.concat(frames, ignore_index=True)

    def pm(col: str) -> pd.Series:
        """``mean (low–high)``: the interval as its bounds, inside [0, 100%] by construction."""
        bounds = [
            "" if pd.isna(low) else f" ({low:.2%}–{high:.2%})"
            for low, high in zip(table[f"{col}_low"], table[f"{col}_high"], strict=True)
        ]
        return table[col].map("{:.2%}".format) + bounds

    return pd.DataFrame(
        {
            "dataset": table.dataset,
            "approach": table.approach,
            "n": table.n,
            "seq_acc": pm("seq_acc"),
            "char_acc": pm("char_acc"),
            "cer": pm("cer"),
            "params": table.params.map(lambda v: f"{v / 1e6:.2f}M"),
            "train_s": table.train_seconds.map("{:.0f}".format),
        }
    )
