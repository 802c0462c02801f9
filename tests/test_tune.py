import mlflow
import optuna
import pytest
from optuna.trial import TrialState

import bench.approaches.registry as registry
import bench.tracking.record as tracked_module
import bench.tune as tune_module
from bench.approaches import get_approach
from bench.data import load_dataset
from bench.spec import Recipe
from bench.tune import TuneConfig, counted, study_report, tune
from tests.test_train import nan_approach

TINY = "synthetic:tiny,count=120"
FIXED = {"height": 32, "width": 96, "hidden": 16, "epochs": 3}


def config(tmp_path, trials: int, epochs: int = FIXED["epochs"], **kwargs) -> TuneConfig:
    return TuneConfig(
        recipe=Recipe.of("lstm-columns", load_dataset(TINY), {**FIXED, "epochs": epochs}),
        trials=trials,
        storage=f"sqlite:///{tmp_path / 'optuna.db'}",
        progress=False,
        **kwargs,
    )


def runs(mlflow_store: str, **tags: str) -> list:
    client = mlflow.MlflowClient(mlflow_store)
    experiment = client.get_experiment_by_name(TINY)
    query = " and ".join(f"tags.{k} = '{v}'" for k, v in tags.items())
    return client.search_runs([experiment.experiment_id], query)


def test_study_with_pruning_nests_trials_under_its_parent(tmp_path, mlflow_store, monkeypatch):
    # a pruner that is certain to fire after the first epoch: the wiring is what is tested
    monkeypatch.setattr(
        tune_module,
        "make_pruner",
        lambda name, epochs: optuna.pruners.ThresholdPruner(upper=-0.5, n_warmup_steps=0),
    )
    study = tune(config(tmp_path, 3))
    report = study_report(study)
    assert (report["complete"], report["pruned"], report["failed"]) == (0, 3, 0)
    for trial in study.trials:
        assert "pruned at epoch 1" in trial.user_attrs["prune_reason"]
        assert set(trial.params) == {"lr", "momentum", "batch_size", "dropout"}  # hidden is fixed
    parent = runs(mlflow_store, kind="study")
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"
    assert parent[0].data.metrics["study/n_pruned"] == 3
    children = runs(mlflow_store, optuna_study=study.study_name, trial_state="pruned")
    assert len(children) == 3
    assert all(c.data.tags["mlflow.parentRunId"] == parent[0].info.run_id for c in children)
    assert all(c.info.status == "FINISHED" and "stopped" in c.data.tags for c in children)


def test_study_records_best_params_and_never_touches_the_test_split(
    tmp_path, mlflow_store, monkeypatch
):
    seen = []
    original = tracked_module.train

    def spy(*args, **kwargs):
        result = original(*args, **kwargs)
        seen.append(result)
        return result

    monkeypatch.setattr(tracked_module, "train", spy)
    study = tune(config(tmp_path, 2, pruner="none"))
    assert len(study.trials) == 2 and all(t.state == TrialState.COMPLETE for t in study.trials)
    for trial, result in zip(study.trials, seen, strict=True):
        last = result.history[-1]
        assert trial.value == last["val_cer"] - 1e-6 * last["val_seq_acc"]
        assert trial.user_attrs["val_cer"] == last["val_cer"]
    defaults = get_approach("lstm-columns").resolve(FIXED)
    first = study.trials[0]
    assert first.user_attrs["defaults"] and first.params == {
        k: defaults[k] for k in ("lr", "momentum", "batch_size", "dropout")
    }
    assert study.trials[1].params != first.params
    parent = runs(mlflow_store, kind="study")[0]
    best = study.best_trial
    assert parent.data.metrics["study/best_value"] == best.value
    assert parent.data.tags["best.lr"] == str(float(f"{best.params['lr']:.4g}"))  # as people read
    assert study.metric_names == ["val_cer - 1e-06 x val_seq_acc"]  # optuna-dashboard's label
    assert study.user_attrs["kind"] == "tuning"
    assert parent.info.run_name == f"tune lstm-columns {TINY}"
    assert parent.data.tags["source"] == "003" and parent.data.tags["mlflow.user"]
    for trial in study.trials:  # trial and run name each other
        (run,) = runs(mlflow_store, trial=str(trial.number), optuna_study=study.study_name)
        assert trial.user_attrs["mlflow_run_id"] == run.info.run_id
        assert run.info.run_name == f"lstm-columns trial {trial.number} {TINY}"  # Optuna's number


def test_a_retried_trial_links_its_own_run_not_the_dead_ones(tmp_path, mlflow_store):
    """Optuna's retry of a dead worker's trial copies its attributes, the dead run's id too."""
    cfg = config(tmp_path, 1, pruner="none")
    study = tune_module.create_study(cfg)
    study.enqueue_trial({}, user_attrs={"mlflow_run_id": "the-dead-run", "retry_of": 0})
    tune(cfg)
    (trial,) = [t for t in study.trials if t.state == TrialState.COMPLETE]
    assert trial.user_attrs["retry_of"] == 0
    (run,) = runs(mlflow_store, trial=str(trial.number), optuna_study=study.study_name)
    assert trial.user_attrs["mlflow_run_id"] == run.info.run_id != "the-dead-run"


def test_nan_loss_prunes_with_the_reason_and_errors_fail_only_their_trial(tmp_path, monkeypatch):
    nan = nan_approach(height=32, width=96)
    monkeypatch.setitem(registry._REGISTRY, "nan", nan)
    cfg = TuneConfig(
        recipe=Recipe.of("nan", load_dataset(TINY), {"epochs": 2}),
        trials=2,
        storage=f"sqlite:///{tmp_path}/o.db",
        progress=False,
    )
    study = tune(cfg)
    assert [t.state for t in study.trials] == [TrialState.PRUNED] * 2
    assert "training loss is nan" in study.trials[0].user_attrs["prune_reason"]

    broken = TuneConfig(  # width 2: too narrow for the labels, fails in each trial
        recipe=Recipe.of("lstm-columns", load_dataset(TINY), {**FIXED, "width": 2}),
        trials=2,
        study="broken",
        storage=f"sqlite:///{tmp_path}/o.db",
        progress=False,
    )
    study = tune(broken)
    assert [t.state for t in study.trials] == [TrialState.FAIL] * 2
    assert "emits 2 steps" in study.trials[0].user_attrs["error"]


def test_interrupted_study_resumes_without_redoing_finished_trials(
    tmp_path, mlflow_store, monkeypatch
):
    cfg = config(tmp_path, 3, pruner="none")
    original = tracked_module.train
    calls = {"n": 0}

    def interrupt_second(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(*args, **kwargs)

    monkeypatch.setattr(tracked_module, "train", interrupt_second)
    with pytest.raises(KeyboardInterrupt):
        tune(cfg)
    monkeypatch.setattr(tracked_module, "train", original)
    first = optuna.load_study(study_name=cfg.study, storage=cfg.storage)
    assert [t.state for t in first.trials] == [
        TrialState.COMPLETE,
        TrialState.FAIL,
        TrialState.WAITING,
    ]
    interrupted_params = first.trials[1].params

    study = tune(cfg)  # the same command again
    assert sum(map(counted, study.trials)) == 3
    assert len(study.trials) == 4  # 1 finished before, 1 interrupted, its retry, 1 more
    retry = next(t for t in study.trials if t.user_attrs.get("retry_of") == 1)
    assert retry.params == interrupted_params and retry.state == TrialState.COMPLETE
    assert len(runs(mlflow_store, trial_state="complete")) == 3
    assert len(runs(mlflow_store, trial_state="interrupted")) == 1
    parent = runs(mlflow_store, kind="study")
    assert len(parent) == 1 and parent[0].info.status == "FINISHED"


def test_two_worker_processes_finish_exactly_the_budget(tmp_path, mlflow_store):
    cfg = config(tmp_path, 5, pruner="none")
    study = tune(cfg, workers=2)
    assert len(study.trials) == 5 and all(t.state == TrialState.COMPLETE for t in study.trials)
    assert len(runs(mlflow_store, trial_state="complete")) == 5
    again = tune(cfg, workers=2)  # nothing left to do
    assert len(again.trials) == 5


def test_pruners_leave_a_third_of_the_epochs_to_warm_up():
    assert tune_module.make_pruner("median", 30)._n_warmup_steps == 10
    assert tune_module.make_pruner("median", 3)._n_warmup_steps == 2
    assert isinstance(tune_module.make_pruner("none", 3), optuna.pruners.NopPruner)


def test_bad_settings_are_refused_before_any_trial(tmp_path):
    with pytest.raises(ValueError, match="unknown pruner 'best'"):
        config(tmp_path, 1, pruner="best")
    with pytest.raises(ValueError, match="unknown sampler 'grid'"):
        config(tmp_path, 1, sampler="grid")
    with pytest.raises(ValueError, match="optimizer='nope' is out of range"):
        Recipe.of("lstm-columns", load_dataset(TINY), {"optimizer": "nope"})
    with pytest.raises(ValueError, match="epochs=0 is out of range"):
        Recipe.of("lstm-columns", load_dataset(TINY), {"epochs": 0})


def test_journal_storage_is_accepted(tmp_path):
    cfg = TuneConfig(
        recipe=Recipe.of("lstm-columns", load_dataset(TINY), {**FIXED, "epochs": 1}),
        trials=1,
        pruner="none",
        storage=str(tmp_path / "journal.log"),
        progress=False,
    )
    assert len(tune(cfg).trials) == 1
    assert (tmp_path / "journal.log").stat().st_size > 0


def searched(study: optuna.Study) -> list[tuple]:
    return [tuple(sorted(t.params.items())) for t in study.trials if t.params]


def test_resumed_study_never_replays_a_configuration(tmp_path):
    """--trials 2, then --trials 4: the sampler must not start its draws over (it once did)."""
    cfg = config(tmp_path, 2, epochs=1, pruner="none", sampler="random")
    tune(cfg)
    cfg.trials = 4
    study = tune(cfg)
    params = searched(study)
    assert len(params) == 4 and len(set(params)) == 4
    # reproducible: the same study in a new storage draws the same configurations
    again = config(tmp_path, 4, epochs=1, pruner="none", sampler="random")
    again.storage = f"sqlite:///{tmp_path / 'again.db'}"
    assert searched(tune(again))[1:] == params[1:]


def test_concurrent_workers_draw_distinct_configurations(tmp_path):
    cfg = config(tmp_path, 4, epochs=1, pruner="none", sampler="random")
    params = searched(tune(cfg, workers=2))
    assert len(params) == 4 and len(set(params)) == 4


def test_trials_never_evaluate_the_test_split(tmp_path, mlflow_store, monkeypatch):
    calls = []
    original = tracked_module.train

    def spy(*args, **kwargs):
        calls.append(kwargs.get("test"))
        return original(*args, **kwargs)

    monkeypatch.setattr(tracked_module, "train", spy)
    cfg = config(tmp_path, 2, epochs=1, pruner="none")
    tune(cfg)
    assert calls == [False, False]
    for run in runs(mlflow_store, trial_state="complete"):
        assert not [k for k in run.data.metrics if k.startswith("test_")]


def test_objective_ranks_trials_that_read_nothing_right_by_their_cer(tmp_path):
    from bench.tune import objective_value

    nothing_a = {"val_cer": 0.80, "val_seq_acc": 0.0}
    nothing_b = {"val_cer": 0.95, "val_seq_acc": 0.0}
    assert objective_value(nothing_a) < objective_value(nothing_b)  # minimised
    tie = {"val_cer": 0.10, "val_seq_acc": 0.50}
    assert objective_value(tie) < objective_value({**tie, "val_seq_acc": 0.40})  # tie-break
    assert objective_value(tie) < objective_value({"val_cer": 0.10 + 1 / 520, "val_seq_acc": 1})


def test_a_study_an_older_version_made_to_maximise_is_a_clear_error(tmp_path):
    cfg = config(tmp_path, 1)
    optuna.create_study(study_name=cfg.study, storage=cfg.storage, direction="maximize")
    with pytest.raises(ValueError, match="made to maximize validation accuracy.*another --study"):
        tune_module.create_study(cfg)
