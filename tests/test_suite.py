"""Suites: the smoke suite end to end through the CLI (with a kill and a resume), and errors."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import mlflow
import optuna
import pytest
from optuna.trial import TrialState

import bench.approaches.registry as registry
from bench.approaches import list_approaches
from bench.data import load_dataset
from bench.suite import SuiteError, load_suite, run_suite
from bench.tune import counted
from tests.test_train import nan_approach

ROOT = Path(__file__).resolve().parents[1]


def bench_cli(*args: str, **kwargs) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bench", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        **kwargs,
    )


def final_runs(uri: str, experiment: str) -> list:
    client = mlflow.MlflowClient(uri)
    found = client.get_experiment_by_name(experiment)
    return client.search_runs([found.experiment_id], "tags.kind = 'final'")


def test_smoke_suite_resumes_after_a_kill_without_redoing_work(mlflow_store, tmp_path, monkeypatch):
    # a cache of its own: another test's finished checkpoint of the same run would be reused
    # (and print no epoch lines)
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    args = ("run", "--suite", "smoke", "--storage", storage, "--quiet")
    first = bench_cli(*args)
    lines = []
    for line in first.stdout:  # kill it once the first trial of the second approach finished
        lines.append(line)
        if "crnn-gru trial 0: " in line:  # its line after the trial (not an epoch's)
            first.send_signal(signal.SIGTERM)
            break
    first.wait(timeout=120)
    assert first.returncode == 130, "".join(lines)

    second = bench_cli(*args)
    out, _ = second.communicate(timeout=600)
    assert second.returncode == 0, out
    assert "lstm-columns trial" not in out  # finished trials are not redone
    assert "final synthetic:tiny,count=120 lstm-columns seed" not in out
    assert "crnn-gru seed 1: test seq acc" in out and "report written to" in out
    # the console holds the project's lines only: no MLflow or alembic INFO lines
    assert " INFO " not in out and "mlflow.system_metrics" not in out, out
    assert "crnn-gru seed 1 synthetic:tiny,count=120 epoch 2/2: train loss" in out  # per epoch
    assert "workflowType=machine_learning" in out and "studies: Optuna" in out  # where things are
    # the suite's best approach registered (its first version: the champion)
    name = "captcha-bench-synthetic-tiny-count-120"
    assert f"as models:/{name}@champion (the first)" in out, out
    champion = mlflow.MlflowClient(mlflow_store).get_model_version_by_alias(name, "champion")
    best = re.search(r"best approach (\S+), run (\w+)", out)
    assert champion.run_id == best.group(2) and best.group(1) in ("crnn-gru", "lstm-columns")

    suite = load_suite("smoke")
    for approach in suite.approaches:
        study = f"smoke/{suite.datasets[0]}/{approach}"
        tuning = optuna.load_study(study_name=study, storage=storage)
        assert sum(map(counted, tuning.trials)) == 2
        final = optuna.load_study(study_name=f"{study}/final", storage=storage)
        done = [t.user_attrs["seed"] for t in final.trials if t.state == TrialState.COMPLETE]
        assert sorted(done) == [0, 1]

    finished = [r for r in final_runs(mlflow_store, "smoke") if r.info.status == "FINISHED"]
    keys = [(r.data.tags["approach"], r.data.tags["seed"]) for r in finished]
    assert sorted(keys) == sorted((a, str(s)) for a in suite.approaches for s in (0, 1))
    report = Path("reports/smoke/index.html").read_text()
    assert "crnn-gru" in report and "lstm-columns" in report and "smoke.yaml" in report
    # the summary on stdout carries the report's numbers: n = 2 seeds per approach
    assert all(f"{a}  2" in out for a in suite.approaches)


def write_suite(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "s.yaml"
    path.write_text(text)
    return path


def test_a_failing_approach_is_reported_and_the_rest_goes_on(tmp_path, monkeypatch, mlflow_store):
    nan = nan_approach()
    monkeypatch.setitem(registry._REGISTRY, "nan", nan)
    suite = load_suite(
        write_suite(
            tmp_path,
            'datasets: ["synthetic:tiny,count=120"]\napproaches: [nan, lstm-columns]\n'
            "seeds: [0]\nset: {height: 32, width: 96, epochs: 1}\n",
        )
    )
    outcome = run_suite(suite, suite.recipes(), f"sqlite:///{tmp_path / 'o.db'}", quiet=True)
    assert len(outcome.failures) == 1 and "nan" in outcome.failures[0]
    assert [row["approach"] for row in outcome.rows] == ["nan", "lstm-columns"]
    runs = final_runs(mlflow_store, "s")
    states = {r.data.tags["approach"]: r.info.status for r in runs}
    assert states == {"nan": "FAILED", "lstm-columns": "FINISHED"}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("approaches: [nope]\n", "nope"),
        ("colour: red\n", "unknown key(s) ['colour']"),
        ("tuning: {trails: 3}\n", "unknown key(s) ['trails'] under tuning"),
        ("set: {lrr: 1}\n", "lrr"),
        ("seeds: []\n", "seeds must be"),
        ("a: [\n", "not valid YAML"),
        ("42\n", "a suite is a mapping"),
        ("", "the file is empty"),
        (
            "seeds: 0\n",
            "seeds must be a non-empty list of distinct integers, e.g. [0, 1, 2], got 0",
        ),
        ("seeds: [0, x]\n", "seeds must be"),
        ("tuning: 5\n", "tuning must be a mapping, e.g. {trials: 5}, got 5"),
        ("tuning: {trials: many}\n", "tuning: trials must be an integer >= 0"),
        ("tuning: {pruner: best}\n", "tuning: pruner must be median | hyperband | none"),
        ("tuning: {sampler: grid}\n", "tuning: sampler must be tpe | random"),
        ("datasets: 7\n", "datasets must be a name or a non-empty list"),
        ("set: {epochs: -1}\n", "epochs=-1 is out of range: use >= 1"),
        ("final: {set: {batch_size: 0}}\n", "batch_size=0 is out of range"),
        ("log_models: maybe\n", "log_models must be true or false"),
        ("register: true\n", "register: true needs log_models: true"),
        ("workers: 0\n", "workers must be a positive count or auto, got 0"),
        ("precision: fp16\n", "precision must be auto | fp32 | bf16, got 'fp16'"),
        ("set: {budget: soon}\n", "budget='soon'"),
    ],
)
def test_bad_suites_are_clear_errors(tmp_path, text, message):
    with pytest.raises(SuiteError, match=re.escape(message)):
        load_suite(write_suite(tmp_path, text))


def test_a_single_approach_name_is_a_list_of_one(tmp_path):
    suite = load_suite(write_suite(tmp_path, "approaches: lstm-columns\ndatasets: captcha-v2\n"))
    assert suite.approaches == ["lstm-columns"] and suite.datasets == ["captcha-v2"]


def test_datasets_may_name_their_own_approaches(tmp_path):
    text = "datasets:\n  captcha-v2: [crnn, ce-crnn]\n  synthetic:digits4: lstm-columns\n"
    suite = load_suite(write_suite(tmp_path, text))
    assert suite.pairs == [
        ("captcha-v2", "crnn"),
        ("captcha-v2", "ce-crnn"),
        ("synthetic:digits4", "lstm-columns"),
    ]
    with pytest.raises(SuiteError, match="datasets: captcha-v2 must be a name or"):
        load_suite(write_suite(tmp_path, "datasets: {captcha-v2: 3}\n"))
    with pytest.raises(SuiteError, match="not both"):
        load_suite(write_suite(tmp_path, "datasets: {captcha-v2: all}\napproaches: [crnn]\n"))


def test_reproduce_suite_runs_every_approach_on_its_sources_split():
    suite = load_suite("reproduce")
    assert suite.trials == 0 and len(suite.seeds) >= 3 and suite.common_set == {"split": "source"}
    assert suite.precision == "fp32"  # as the sources trained, also on CUDA
    assert ("synthetic:digits4", "lstm-columns") in suite.pairs
    assert {a for d, a in suite.pairs if d == "captcha-v2"} == set(list_approaches())


def test_unknown_suite_names_the_known_ones():
    with pytest.raises(SuiteError, match="known: .*quick.*smoke"):
        load_suite("nope")


def test_every_shipped_suite_loads():
    for path in sorted((ROOT / "experiments").glob("*.yaml")):
        suite = load_suite(path)
        assert suite.approaches and suite.seeds and suite.datasets


def test_missing_captcha_v2_stops_before_any_training(tmp_path, monkeypatch):
    monkeypatch.delenv("BENCH_DATA_DIR", raising=False)
    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "empty-cache"))
    monkeypatch.setenv("BENCH_OFFLINE", "1")
    started = time.monotonic()
    process = bench_cli("run", "--suite", "quick")
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 2, out
    assert "captcha-v2" in out and "BENCH_DATA_DIR" in out
    assert "tune " not in out and "final " not in out and not Path("optuna.db").exists()
    assert time.monotonic() - started < 120


def test_a_budgeted_suite_counts_seconds_and_sets_its_workers(tmp_path):
    from bench.suite.progress import Progress, WorkCounter
    from bench.suite.runner import Unit, planned_work

    text = (
        'datasets: ["synthetic:tiny,count=20"]\napproaches: [crnn, ce-crnn]\nseeds: [0, 1]\n'
        "set: {budget: 3m}\nworkers: 2\n"
    )
    suite = load_suite(write_suite(tmp_path, text))
    assert suite.workers == 2 and suite.common_set == {"budget": "3m"}
    storage = f"sqlite:///{tmp_path / 'o.db'}"
    units = [Unit(suite, *recipes, storage) for recipes in suite.recipes().values()]
    assert planned_work(units) == (2 * 2 * 180, 0, "s")
    progress = Progress(720, 0, quiet=False)
    counter = WorkCounter(progress, seconds=True)
    for elapsed in (50.4, 101.0, 180.2):  # a run's epochs end at these seconds of its budget
        counter(0, {"elapsed_seconds": elapsed})
    assert progress.bar.n == 180
    counter.finish(180)  # nothing left to add for a run that used its budget
    counter(0, {"elapsed_seconds": 60.0})  # a pruned run: its unused budget is added at the end
    counter.finish(180)
    assert progress.bar.n == 360
    progress.recount = lambda: 900  # other workers finished runs meanwhile (the storage says)
    counter.finish(180)
    assert progress.bar.n == 900  # 360 + this run's 180, caught up to the storage's 900
    progress.close()
    text = 'datasets: ["synthetic:tiny,count=20"]\napproaches: [crnn]\nset: {epochs: 4}\n'
    epochs = load_suite(write_suite(tmp_path, text))
    units = [Unit(epochs, *recipes, storage) for recipes in epochs.recipes().values()]
    assert planned_work(units)[2] == "epoch"
    assert load_suite("quick").common_set.get("budget")  # make bench's CPU suite is budgeted


def test_run_trains_at_the_suites_precision_unless_told(monkeypatch, tmp_path):
    """reproduce.yaml names fp32 (the sources' precision); ``--precision`` overrides it."""
    from bench.cli import main

    class Stop(Exception):
        pass

    seen = []

    def fake_run_suite(suite, recipes, storage, **kwargs):
        seen.append(
            (suite.name, {recipe.precision for pair in recipes.values() for recipe in pair})
        )
        raise Stop

    tiny = load_dataset("synthetic:tiny,count=20")  # in place of every dataset of the suites
    monkeypatch.setattr("bench.suite.schema.load_dataset", lambda *args, **kwargs: tiny)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("bench.suite.run_suite", fake_run_suite)
    plan = SimpleNamespace(wall_s=1.0, lines=lambda: ["plan"])  # no probe of the 8 approaches
    monkeypatch.setattr("bench.suite.plan.plan_suite", lambda *args, **kwargs: plan)
    for extra in ([], ["--precision", "bf16"]):
        with pytest.raises(Stop):
            main(["run", "--suite", "reproduce", "--device", "cpu", *extra])
    with pytest.raises(Stop):
        main(["run", "--suite", "smoke", "--device", "cpu"])
    assert seen == [("reproduce", {"fp32"}), ("reproduce", {"bf16"}), ("smoke", {"auto"})]
