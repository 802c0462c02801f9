"""Everything Optuna: one study per (suite, dataset, approach), each trial a nested MLflow run.

A study is tuned until ``trials`` trials have *finished*: completed, pruned, or failed with an
error. A trial stopped by Ctrl-C is re-queued with the same parameters; one whose worker died is
found by Optuna's heartbeat and re-queued (RDB storage). Re-running the same command therefore
resumes the study, and any number of worker processes can share it.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import math
import multiprocessing
import os
import re
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import optuna
import sqlalchemy
from optuna.trial import TrialState
from tqdm.auto import tqdm

from bench.approaches import get_approach
from bench.data import load_dataset
from bench.tracking import end_orphaned_runs, train_tracked, use_experiment
from bench.train import NonFiniteLossError

DEFAULT_STORAGE = "sqlite:///optuna.db"
OBJECTIVE = "val_seq_acc"
HEARTBEAT_S, GRACE_S = 10, 30
POLL_S = 2.0

optuna.logging.set_verbosity(optuna.logging.WARNING)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


def storage_url(url: str | None = None) -> str:
    """``url``, else ``$BENCH_OPTUNA_STORAGE``, else a SQLite file in the working folder."""
    return url or os.environ.get("BENCH_OPTUNA_STORAGE") or DEFAULT_STORAGE


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An SQLAlchemy URL (RDB storage, with heartbeats) or a journal file (``*.log``)."""
    if url.startswith("journal:") or url.endswith((".log", ".jsonl")):
        path = url.removeprefix("journal:")
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))

    def connect() -> optuna.storages.RDBStorage:
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=HEARTBEAT_S,
            grace_period=GRACE_S,
            heartbeat_stale_trial_callback=retry_stale_trial,
        )

    if url in _SCHEMA_READY:
        return connect()
    with StorageLock(url):  # workers starting together must not all create the schema
        storage = connect()
    _SCHEMA_READY.add(url)
    return storage


_SCHEMA_READY: set[str] = set()


def trial_key(study_name: str, number: int) -> str:
    """Tags the MLflow run of a trial (``optuna_trial``), to find it from the study."""
    return f"{study_name}#{number}"


def retry_stale_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """A trial whose worker died (its heartbeat stopped): queued again with the same parameters,
    and its MLflow run, which nobody will end, ended FAILED."""
    optuna.storages.RetryHeartbeatStaleTrialCallback()(study, trial)
    end_orphaned_runs(trial_key(study.study_name, trial.number))


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    """Pruners that leave a trial its first third of epochs (at least 2): CTC models often read
    nothing for several epochs before they start to learn."""
    warmup = max(2, epochs // 3)
    pruners = {
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=warmup),
        "hyperband": lambda: optuna.pruners.HyperbandPruner(
            min_resource=warmup, max_resource=max(epochs, warmup + 1)
        ),
        "none": optuna.pruners.NopPruner,
    }
    if name not in pruners:
        raise ValueError(f"unknown pruner {name!r}; use {', '.join(pruners)}")
    return pruners[name]()


def make_sampler(name: str, seed: int | None) -> optuna.samplers.BaseSampler:
    samplers = {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}
    if name not in samplers:
        raise ValueError(f"unknown sampler {name!r}; use {', '.join(samplers)}")
    return samplers[name](seed=seed)


def default_study_name(suite: str, dataset: str, approach: str) -> str:
    return f"{suite or 'default'}/{dataset}/{approach}"


@dataclass
class TuneConfig:
    """Everything a worker needs; plain values, so worker processes can receive it."""

    approach: str
    dataset: str
    trials: int
    storage: str = DEFAULT_STORAGE
    study: str = ""
    suite: str = ""
    timeout: float | None = None
    pruner: str = "median"
    sampler: str = "tpe"
    overrides: dict[str, Any] = field(default_factory=dict)  # fixed for every trial (epochs...)
    seed: int = 0
    device: str = "auto"
    data_dir: str | None = None
    split_seed: int = 0
    experiment: str | None = None
    progress: bool = True
    from_defaults: bool = True  # the first trial is the seed's defaults

    def __post_init__(self) -> None:
        self.study = self.study or default_study_name(self.suite, self.dataset, self.approach)


class FixedKeys:
    """A trial whose ``suggest_*`` calls return the fixed value for fixed keys (not recorded as
    searched parameters) and ask the real trial for the others."""

    def __init__(self, trial: optuna.Trial, fixed: dict[str, Any]):
        self._trial, self._fixed = trial, fixed

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._trial, name)
        if not name.startswith("suggest_"):
            return attr
        return lambda key, *args, **kwargs: (
            self._fixed[key] if key in self._fixed else attr(key, *args, **kwargs)
        )


def counted(trial: optuna.trial.FrozenTrial) -> bool:
    """Finished trials that count towards the budget (an interrupted or dead one does not)."""
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        trial.state == TrialState.FAIL and "error" in trial.user_attrs
    )


def trial_counts(study: optuna.Study) -> dict[str, int]:
    trials = study.get_trials(deepcopy=False)
    return {
        "complete": sum(t.state == TrialState.COMPLETE for t in trials),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "failed": sum(t.state == TrialState.FAIL and "error" in t.user_attrs for t in trials),
        "running": sum(t.state == TrialState.RUNNING for t in trials),
    }


class StorageLock:
    """Serialises "count, then start a trial" between all processes sharing a storage, so that
    exactly ``trials`` trials start: a file lock beside a SQLite or journal file, an advisory lock
    in a PostgreSQL or MySQL server (held by a connection: a dead worker's lock goes with it).
    ``release`` may be called more than once."""

    def __init__(self, url: str, name: str = "captcha-bench"):
        match = re.match(r"sqlite:///(.+)", url) or re.match(
            r"(?:journal:)?(.+\.(?:log|jsonl))$", url
        )
        self.path = Path(match.group(1)).with_suffix(".bench-lock") if match else None
        self.url = None if match or url.startswith("sqlite") else url
        self.key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        self.name = name[:64]
        self._handle = None

    def acquire(self) -> StorageLock:
        if self._handle is not None:
            return self
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._handle = self.path.open("w")
            fcntl.flock(self._handle, fcntl.LOCK_EX)
        elif self.url is not None:
            self._handle = server_engine(self.url).connect()
            if self._handle.dialect.name == "postgresql":
                self._handle.exec_driver_sql(f"SELECT pg_advisory_lock({self.key})")
            elif self._handle.dialect.name in ("mysql", "mariadb"):
                self._handle.exec_driver_sql("SELECT GET_LOCK(%s, -1)", (self.name,))
        return self

    def release(self) -> None:
        if self._handle is None:
            return
        if self.path is not None:
            fcntl.flock(self._handle, fcntl.LOCK_UN)
        elif self._handle.dialect.name == "postgresql":
            self._handle.exec_driver_sql(f"SELECT pg_advisory_unlock({self.key})")
        elif self._handle.dialect.name in ("mysql", "mariadb"):
            self._handle.exec_driver_sql("SELECT RELEASE_LOCK(%s)", (self.name,))
        self._handle.close()
        self._handle = None

    def __enter__(self) -> StorageLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@functools.cache
def server_engine(url: str) -> sqlalchemy.Engine:
    """One small connection pool per database server URL, for the advisory locks."""
    return sqlalchemy.create_engine(url, pool_size=1, max_overflow=2, pool_pre_ping=True)


def create_study(cfg: TuneConfig, worker: int = 0) -> optuna.Study:
    return optuna.create_study(
        study_name=cfg.study,
        storage=open_storage(cfg.storage),
        direction="maximize",
        sampler=make_sampler(cfg.sampler, cfg.seed + worker),
        pruner=make_pruner(
            cfg.pruner, int(get_approach(cfg.approach).resolve(cfg.overrides)["epochs"])
        ),
        load_if_exists=True,
    )


def parent_run(cfg: TuneConfig) -> str:
    """The study's MLflow run (found by tag, created once); trials nest under it."""
    experiment_id = use_experiment(cfg.experiment or cfg.dataset)
    client = mlflow.MlflowClient()
    found = client.search_runs(
        [experiment_id],
        f"tags.optuna_study = '{cfg.study}'",
        max_results=1,
        order_by=["attributes.start_time ASC"],
    )
    if found:
        return found[0].info.run_id
    run = client.create_run(
        experiment_id,
        run_name=f"tune {cfg.approach}",
        tags={
            "optuna_study": cfg.study,
            "approach": cfg.approach,
            "dataset": cfg.dataset,
            "suite": cfg.suite,
            "kind": "study",
        },
    )
    client.log_batch(
        run.info.run_id,
        params=[
            mlflow.entities.Param(k, str(v))
            for k, v in {
                "approach": cfg.approach,
                "dataset": cfg.dataset,
                "trials": cfg.trials,
                "pruner": cfg.pruner,
                "sampler": cfg.sampler,
                "study": cfg.study,
                "storage": re.sub(r"//[^@/]*@", "//***@", cfg.storage),
                **{f"fixed.{k}": v for k, v in cfg.overrides.items()},
            }.items()
        ],
    )
    return run.info.run_id


def summarize_parent(study: optuna.Study, run_id: str, status: str) -> None:
    """Best value and parameters (as tags: they change while a study goes on) and the counts;
    the run ends with ``status`` unless that is RUNNING (others still work on the study)."""
    client = mlflow.MlflowClient()
    counts = trial_counts(study)
    metrics = {f"n_{k}": v for k, v in counts.items() if k != "running"}
    best = None
    with contextlib.suppress(ValueError):  # no completed trial yet
        best = study.best_trial
    if best is not None:
        metrics["best_value"] = best.value
        client.set_tag(run_id, "best_trial", best.number)
        for key, value in best.params.items():
            client.set_tag(run_id, f"best.{key}", value)
    for key, value in metrics.items():
        client.log_metric(run_id, key, value)
    if status != "RUNNING":
        client.set_terminated(run_id, status)


def objective(cfg: TuneConfig, trial: optuna.Trial, parent: str, callbacks: tuple = ()) -> float:
    """One trial: suggested hyperparameters, a nested MLflow run, pruning on validation accuracy.

    Returns the last epoch's validation sequence accuracy; raises ``TrialPruned`` (a pruned or
    non-finite run) or the trial's error (Optuna records it as failed; the study goes on).
    ``callbacks`` get every epoch's statistics, like the trainer's.
    """
    approach = get_approach(cfg.approach)
    dataset = load_dataset(cfg.dataset, data_dir=cfg.data_dir, split_seed=cfg.split_seed)
    overrides = {**approach.search_space(FixedKeys(trial, cfg.overrides)), **cfg.overrides}

    def report(epoch: int, stats: dict[str, float]) -> None:
        trial.report(stats[OBJECTIVE], step=epoch + 1)
        if trial.should_prune():
            raise optuna.TrialPruned(
                f"pruned at epoch {epoch + 1}: {OBJECTIVE} {stats[OBJECTIVE]:.4f}"
            )

    try:
        result, _ = train_tracked(
            cfg.approach,
            dataset,
            overrides,
            seed=cfg.seed,
            device=cfg.device,
            experiment=cfg.experiment,
            suite=cfg.suite,
            parent_run_id=parent,
            callbacks=(*callbacks, report),
            log_model=False,
            progress=False,
            tags={
                "trial": trial.number,
                "optuna_study": cfg.study,
                "optuna_trial": trial_key(cfg.study, trial.number),
            },
            run_name=f"trial {trial.number}",
            finished_on=(optuna.TrialPruned, NonFiniteLossError),
            state_tag="trial_state",
        )
    except (optuna.TrialPruned, NonFiniteLossError) as err:
        trial.set_user_attr("prune_reason", str(err))
        raise optuna.TrialPruned(str(err)) from None
    except KeyboardInterrupt:
        trial.set_user_attr("interrupted", True)
        trial.study.enqueue_trial(trial.params, user_attrs={"retry_of": trial.number})
        raise
    except Exception as err:
        trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:2000])
        raise
    return result.history[-1][OBJECTIVE]


class DefaultsTrial:
    """Stands in for a trial: each ``suggest_*`` returns (and records) the approach's default."""

    def __init__(self, defaults: dict[str, Any]):
        self.defaults, self.params = defaults, {}

    def __getattr__(self, name: str) -> Any:
        if not name.startswith("suggest_"):
            raise AttributeError(name)

        def suggest(key: str, *args: Any, **kwargs: Any) -> Any:
            self.params[key] = self.defaults[key]
            return self.defaults[key]

        return suggest


def default_params(cfg: TuneConfig) -> dict[str, Any]:
    """The searched parameters at the seed's defaults: a study's first trial."""
    approach = get_approach(cfg.approach)
    stand_in = DefaultsTrial(approach.resolve(cfg.overrides))
    approach.search_space(FixedKeys(stand_in, cfg.overrides))
    return stand_in.params


def work(
    cfg: TuneConfig,
    worker: int = 0,
    callbacks: tuple = (),
    on_trial: Callable[[optuna.trial.FrozenTrial], None] | None = None,
    wait: bool = True,
) -> bool:
    """A worker: take trials until the budget is used up (or the timeout passes). ``callbacks``
    get every epoch's statistics, ``on_trial`` each trial this worker finished. Without ``wait``
    it returns as soon as every remaining trial is claimed by others. Returns whether the
    study's budget is finished.

    The study's first trial is the seed's defaults (with ``cfg.from_defaults``), so tuning never
    ends worse on validation than not tuning.
    """
    study = create_study(cfg, worker)
    with StorageLock(cfg.storage):
        parent = parent_run(cfg)
        if cfg.from_defaults and not study.get_trials(deepcopy=False):
            study.enqueue_trial(default_params(cfg), user_attrs={"defaults": True})
    started = time.monotonic()
    bar = tqdm(
        total=cfg.trials,
        desc=f"tune {cfg.approach}",
        unit="trial",
        disable=not cfg.progress or worker > 0,
    )
    status = None
    try:
        while cfg.timeout is None or time.monotonic() - started < cfg.timeout:
            lock = StorageLock(cfg.storage).acquire()
            try:
                optuna.storages.fail_stale_trials(study)  # no-op without heartbeats
                trials = study.get_trials(deepcopy=False)
                done = sum(map(counted, trials))
                bar.n = min(done, cfg.trials)
                bar.refresh()
                if done >= cfg.trials:
                    status = "FINISHED"
                    break
                if done + sum(t.state == TrialState.RUNNING for t in trials) >= cfg.trials:
                    if not wait:
                        break
                    lock.release()
                    time.sleep(POLL_S)  # others run the last trials; wait for them or their failure
                    continue

                def run(trial: optuna.Trial, lock: StorageLock = lock) -> float:
                    lock.release()  # the trial exists: others may count it now
                    return objective(cfg, trial, parent, callbacks)

                # optimize (not ask/tell) keeps the heartbeat that finds trials of dead workers
                study.optimize(
                    run,
                    n_trials=1,
                    catch=(Exception,),
                    callbacks=[lambda _, trial: on_trial(trial)] if on_trial else None,
                )
            finally:
                lock.release()
        else:
            status = "FINISHED"  # timed out: this command is done with the study
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        bar.close()
        summarize_parent(study, parent, status or "RUNNING")
    return sum(map(counted, study.get_trials(deepcopy=False))) >= cfg.trials


def _work_in_process(cfg: TuneConfig, worker: int) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        work(cfg, worker)


def tune(cfg: TuneConfig, workers: int = 1) -> optuna.Study:
    """Run ``workers`` processes on the study (this one included); return the study."""
    if cfg.trials < 1 or workers < 1:
        raise ValueError("--trials and --workers must be at least 1")
    open_storage(cfg.storage)  # create the schema once, before workers race to do it
    context = multiprocessing.get_context("spawn")
    others = [context.Process(target=_work_in_process, args=(cfg, i)) for i in range(1, workers)]
    for process in others:
        process.start()
    try:
        work(cfg, 0)
    finally:
        for process in others:
            process.join()
    return create_study(cfg)


def study_report(study: optuna.Study) -> dict[str, Any]:
    counts = trial_counts(study)
    best = None
    with contextlib.suppress(ValueError):
        best = study.best_trial
    return {
        "study": study.study_name,
        **counts,
        "best_value": best.value if best else math.nan,
        "best_trial": best.number if best else None,
        "best_params": best.params if best else {},
    }
