"""Everything Optuna: one study per (suite, dataset, approach), each trial a nested MLflow run.

A study is tuned until ``trials`` trials have *finished*: completed, pruned, or failed with an
error. A trial stopped by Ctrl-C is re-queued with the same parameters; one whose worker died is
found by Optuna's heartbeat and re-queued (RDB storage). Re-running the same command therefore
resumes the study, and any number of worker processes (and machines) can share it. Every trial
draws from a sampler seeded by the study's seed and the trial's number, so trials never replay
each other's draws, across resumes and workers, and a study is reproducible.

Trials train on the training split and are scored on the validation split; the test split is
never evaluated during tuning.
"""

from __future__ import annotations

import contextlib
import hashlib
import math
import os
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import optuna
from optuna.trial import TrialState
from tqdm.auto import tqdm

from bench.approaches import get_approach
from bench.orchestration import (
    BUSY,
    DEFAULT_STORAGE,
    DONE,
    TAKE,
    StorageLock,
    claimed,
    counted,
    open_storage,
    trial_counts,
    trial_key,
    work_queue,
    worker_processes,
)
from bench.spec import Recipe
from bench.tracking.record import train_tracked
from bench.tracking.runs import active_run_id
from bench.tracking.studies import study_run, summarize_study_run
from bench.training import EpochLines, NonFiniteLossError

__all__ = [
    "OBJECTIVE",
    "PRUNERS",
    "SAMPLERS",
    "TuneConfig",
    "create_study",
    "default_params",
    "study_report",
    "tune",
    "work",
]

OBJECTIVE = "val_cer"  # minimised; the validation sequence accuracy breaks ties
TIE_BREAK = "val_seq_acc"
TIE_WEIGHT = 1e-6  # below any CER step of a validation split under a million characters
METRIC_NAME = f"{OBJECTIVE} - {TIE_WEIGHT:g} x {TIE_BREAK}"  # as optuna-dashboard shows it
DIRECTION = "minimize"


def objective_value(stats: dict[str, float]) -> float:
    """A trial's score: validation CER less a millionth of its sequence accuracy. Equal CERs
    rank by accuracy, and a study at a budget too small to read any image right still ranks its
    trials (a sequence-accuracy objective scores them all 0 and the sampler learns nothing)."""
    return stats[OBJECTIVE] - TIE_WEIGHT * stats[TIE_BREAK]


PRUNERS = ("median", "hyperband", "none")
SAMPLERS = ("tpe", "random")

# Optuna's own lines only with `python -m bench --verbose` (which sets BENCH_LOG_LEVEL=INFO)
optuna.logging.set_verbosity(
    optuna.logging.INFO if os.environ.get("BENCH_LOG_LEVEL") == "INFO" else optuna.logging.WARNING
)
warnings.filterwarnings("ignore", category=optuna.exceptions.ExperimentalWarning)


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
    return pruners[name]()


def make_sampler(name: str, seed: int) -> optuna.samplers.BaseSampler:
    return {"tpe": optuna.samplers.TPESampler, "random": optuna.samplers.RandomSampler}[name](
        seed=seed
    )


def trial_seed(seed: int, study: str, number: int) -> int:
    """The sampler seed of trial ``number``: distinct per trial, the same on every worker."""
    text = f"{seed}/{study}/{number}".encode()
    return int.from_bytes(hashlib.sha256(text).digest()[:4], "big")


def default_study_name(suite: str, dataset: str, approach: str) -> str:
    return f"{suite or 'default'}/{dataset}/{approach}"


@dataclass
class TuneConfig:
    """A study's settings and the recipe its trials are specs of; plain values, so worker
    processes can receive it. Checked when made: pruner and sampler (the recipe was checked when
    it was made)."""

    recipe: Recipe
    trials: int
    storage: str = DEFAULT_STORAGE
    study: str = ""
    suite: str = ""
    timeout: float | None = None
    pruner: str = "median"
    sampler: str = "tpe"
    seed: int = 0
    experiment: str | None = None
    progress: bool = True

    def __post_init__(self) -> None:
        self.study = self.study or default_study_name(self.suite, self.dataset, self.approach)
        if self.pruner not in PRUNERS:
            raise ValueError(f"unknown pruner {self.pruner!r}; use {', '.join(PRUNERS)}")
        if self.sampler not in SAMPLERS:
            raise ValueError(f"unknown sampler {self.sampler!r}; use {', '.join(SAMPLERS)}")
        self.epochs = self.recipe.hparams()["epochs"]

    @property
    def approach(self) -> str:
        return self.recipe.approach

    @property
    def dataset(self) -> str:
        return self.recipe.dataset

    @property
    def fixed(self) -> dict[str, Any]:
        return dict(self.recipe.fixed)


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


def create_study(cfg: TuneConfig) -> optuna.Study:
    """The study (created once); its sampler is replaced per trial by :func:`work`. A study of
    the same name that an older version made to maximise accuracy is an error naming it."""
    storage = open_storage(cfg.storage)
    with contextlib.suppress(KeyError):  # KeyError: no such study yet
        made = optuna.load_study(study_name=cfg.study, storage=storage).direction
        if made != optuna.study.StudyDirection.MINIMIZE:
            raise ValueError(
                f"study {cfg.study!r} in {cfg.storage} was made to {made.name.lower()} validation "
                f"accuracy by an older version; tuning now minimises {OBJECTIVE}: give another "
                "--study name or delete it (optuna delete-study)"
            )
    study = optuna.create_study(
        study_name=cfg.study,
        storage=storage,
        direction=DIRECTION,
        sampler=make_sampler(cfg.sampler, trial_seed(cfg.seed, cfg.study, 0)),
        pruner=make_pruner(cfg.pruner, cfg.epochs),
        load_if_exists=True,
    )
    if study.metric_names is None:  # what optuna-dashboard labels the objective with
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names([METRIC_NAME])
        study.set_user_attr("kind", "tuning")
    return study


def parent_run(cfg: TuneConfig) -> str:
    """The study's MLflow run (found by tag, created once); trials nest under it."""
    tags = {
        "approach": cfg.approach,
        "source": get_approach(cfg.approach).source,
        "dataset": cfg.dataset,
        "suite": cfg.suite,
    }
    params = {
        "approach": cfg.approach,
        "dataset": cfg.dataset,
        "trials": cfg.trials,
        "pruner": cfg.pruner,
        "trial_epochs": cfg.epochs,
        "sampler": cfg.sampler,
        "study": cfg.study,
        "storage": cfg.storage,
        **{f"fixed.{k}": v for k, v in cfg.fixed.items()},
    }
    return study_run(cfg.experiment or cfg.dataset, cfg.study, tags, params)


def rounded(params: dict[str, Any]) -> dict[str, Any]:
    """Parameters as people read them: floats to 4 significant digits (display only; runs use
    the exact values)."""
    return {k: float(f"{v:.4g}") if isinstance(v, float) else v for k, v in params.items()}


def summarize_parent(study: optuna.Study, run_id: str, status: str) -> None:
    """Best value and parameters and the counts on the study's run (see
    :func:`~bench.tracking.studies.summarize_study_run`)."""
    metrics = {f"n_{k}": v for k, v in trial_counts(study).items() if k != "running"}
    tags: dict[str, Any] = {}
    best = None
    with contextlib.suppress(ValueError):  # no completed trial yet
        best = study.best_trial
    if best is not None:
        metrics["best_value"] = best.value
        metrics.update(
            {
                f"best_{k}": best.user_attrs[k]
                for k in (OBJECTIVE, TIE_BREAK)
                if k in best.user_attrs
            }
        )
        tags = {
            "best_trial": best.number,
            **{f"best.{k}": v for k, v in rounded(best.params).items()},
        }
    summarize_study_run(run_id, metrics, tags, status)


def objective(cfg: TuneConfig, trial: optuna.Trial, parent: str, callbacks: tuple = ()) -> float:
    """One trial: suggested hyperparameters, a nested MLflow run, pruning on the objective.

    Returns the last epoch's :func:`objective_value` (validation CER, accuracy breaking ties);
    raises ``TrialPruned`` (a pruned or
    non-finite run) or the trial's error (Optuna records it as failed; the study goes on).
    ``callbacks`` get every epoch's statistics, like the trainer's.
    """
    approach = get_approach(cfg.approach)
    dataset = cfg.recipe.load_dataset()

    def report(epoch: int, stats: dict[str, float]) -> None:
        trial.report(objective_value(stats), step=epoch + 1)
        if trial.should_prune():
            raise optuna.TrialPruned(
                f"pruned at epoch {epoch + 1}: {OBJECTIVE} {stats[OBJECTIVE]:.2%}, "
                f"{TIE_BREAK} {stats[TIE_BREAK]:.2%}"
            )

    linked: list[str] = []

    def link_run(epoch: int, stats: dict[str, float]) -> None:
        """The trial names its MLflow run (the run names the trial in its tags); a retried
        trial, which inherits the dead one's attributes, names its own."""
        if not linked:
            linked.append(active_run_id())
            trial.set_user_attr("mlflow_run_id", linked[0])

    with claimed(trial):
        spec = cfg.recipe.spec(approach.search_space(FixedKeys(trial, cfg.fixed)), seed=cfg.seed)
        try:
            result, _ = train_tracked(
                spec,
                dataset,
                experiment=cfg.experiment,
                tags={
                    "suite": cfg.suite,
                    "trial": trial.number,
                    "optuna_study": cfg.study,
                    "optuna_trial": trial_key(cfg.study, trial.number),
                },
                run_name=f"{cfg.approach} trial {trial.number} {cfg.dataset}",
                parent_run_id=parent,
                callbacks=(
                    *callbacks,
                    link_run,
                    report,
                    EpochLines(spec, f"{cfg.approach} trial {trial.number}"),
                ),
                log_model=False,
                progress=False,
                test=False,
                finished_on=(optuna.TrialPruned, NonFiniteLossError),
                state_tag="trial_state",
            )
        except (optuna.TrialPruned, NonFiniteLossError) as err:
            trial.set_user_attr("prune_reason", str(err))
            raise optuna.TrialPruned(str(err)) from None
    last = result.history[-1]
    trial.set_user_attr(OBJECTIVE, last[OBJECTIVE])
    trial.set_user_attr(TIE_BREAK, last[TIE_BREAK])
    return objective_value(last)


def default_params(cfg: TuneConfig) -> dict[str, Any]:
    """The searched parameters at the source's defaults: a study's first trial."""
    fixed = optuna.trial.FixedTrial(cfg.recipe.hparams())
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # a default outside the searched range is still used
        get_approach(cfg.approach).search_space(FixedKeys(fixed, cfg.fixed))
    return fixed.params


def work(
    cfg: TuneConfig,
    callbacks: tuple = (),
    on_trial: Callable[[optuna.trial.FrozenTrial], None] | None = None,
    wait: bool = True,
    show_bar: bool = True,
) -> bool:
    """A worker: take trials until the budget is used up (or the timeout passes). ``callbacks``
    get every epoch's statistics, ``on_trial`` each trial this worker finished. Without ``wait``
    it returns as soon as every remaining trial is claimed by others. Returns whether the
    study's budget is finished.

    The study's first trial is the source's defaults, so tuning never ends worse on validation
    than not tuning.
    """
    study = create_study(cfg)
    with StorageLock(cfg.storage):
        parent = parent_run(cfg)
        study.enqueue_trial(default_params(cfg), user_attrs={"defaults": True}, skip_if_exists=True)
    bar = tqdm(
        total=cfg.trials,
        desc=f"tune {cfg.approach}",
        unit="trial",
        disable=not cfg.progress or not show_bar,
    )
    seen: list[optuna.trial.FrozenTrial] = []

    def look(trials: list[optuna.trial.FrozenTrial]) -> str:
        seen[:] = trials
        done = sum(map(counted, trials))
        bar.n = min(done, cfg.trials)
        bar.refresh()
        if done >= cfg.trials:
            return DONE
        running = sum(t.state == TrialState.RUNNING for t in trials)
        return BUSY if done + running >= cfg.trials else TAKE

    def take(lock: StorageLock | None) -> None:
        def run(trial: optuna.Trial) -> float:
            lock.release()  # the trial exists: others may count it now

            def show_epoch(epoch: int, stats: dict[str, float]) -> None:
                bar.set_postfix_str(
                    f"trial {trial.number}: epoch {epoch + 1}, "
                    f"val CER {stats[OBJECTIVE]:.1%}, val seq acc {stats[TIE_BREAK]:.1%}"
                )

            return objective(cfg, trial, parent, (*callbacks, show_epoch))

        # the next trial's number is len(seen) (numbers are given under the lock)
        study.sampler = make_sampler(cfg.sampler, trial_seed(cfg.seed, cfg.study, len(seen)))
        study.optimize(
            run,
            n_trials=1,
            catch=(Exception,),
            callbacks=[lambda _, trial: on_trial(trial)] if on_trial else None,
        )

    status = "RUNNING"
    try:
        state = work_queue(study, look, take, wait, lock=cfg.storage, timeout=cfg.timeout)
        if state != BUSY:  # done, or timed out: this command is done with the study
            status = "FINISHED"
    except KeyboardInterrupt:
        status = "KILLED"
        raise
    finally:
        bar.close()
        with StorageLock(cfg.storage):  # workers finishing together would insert the same tags
            summarize_parent(study, parent, status)
    return sum(map(counted, study.get_trials(deepcopy=False))) >= cfg.trials


def _work_in_process(cfg: TuneConfig) -> None:
    with contextlib.suppress(KeyboardInterrupt):
        work(cfg, show_bar=False)


def tune(cfg: TuneConfig, workers: int = 1, gpus: Sequence[str] = ()) -> optuna.Study:
    """Run ``workers`` processes on the study (this one included; ``gpus``: each one's CUDA
    device, see :func:`~bench.orchestration.worker_processes`); return the study."""
    if cfg.trials < 1 or workers < 1:
        raise ValueError("--trials and --workers must be at least 1")
    open_storage(cfg.storage)  # create the schema once, before workers race to do it
    with worker_processes(_work_in_process, (cfg,), workers - 1, gpus):
        work(cfg)
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
        **{f"best_{k}": best.user_attrs.get(k) if best else None for k in (OBJECTIVE, TIE_BREAK)},
        "best_trial": best.number if best else None,
        "best_params": rounded(best.params) if best else {},
    }
