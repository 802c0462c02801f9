"""What users see before and after work: one error line for what cannot be written or opened
(before anything trains), links that open MLflow's UI in its training view, rounded numbers."""

from __future__ import annotations

import re
from pathlib import Path

import mlflow
import pytest

from bench.cli import main
from bench.tracking import training_view
from bench.tune import rounded

SUITE = """
datasets: ["synthetic:tiny,count=60"]
approaches: [crnn-gru]
set: {height: 32, width: 96, epochs: 1}
"""


@pytest.fixture
def never_trains(monkeypatch):
    """Fails the test if anything starts training."""
    import bench.training.trainer

    def refuse(*args, **kwargs):
        raise AssertionError("trained before checking its outputs")

    monkeypatch.setattr(bench.training.trainer, "Trainer", refuse)


@pytest.mark.parametrize(
    ("args", "env", "message"),
    [
        (["--out", "/proc/x/report.html"], {}, "--out /proc/x/report.html: cannot write into"),
        (["--out", "{file}/report.html"], {}, "is a file, not a folder"),
        (["--storage", "nosuchdb://x"], {}, "Optuna storage nosuchdb://x (--storage): Can't load"),
        (["--storage", "sqlite:////proc/x/optuna.db"], {}, "Optuna storage (--storage) /proc/x"),
        ([], {"MLFLOW_TRACKING_URI": "sqlite:////proc/x/mlflow.db"}, "MLflow store"),
        ([], {"BENCH_CACHE_DIR": "/proc/x"}, "cache (BENCH_CACHE_DIR) /proc/x: cannot write"),
    ],
    ids=["out-unwritable", "out-under-a-file", "storage-url", "storage-path", "mlflow", "cache"],
)
def test_what_run_writes_is_checked_before_any_work(
    args, env, message, tmp_path, monkeypatch, capsys, never_trains
):
    suite = tmp_path / "s.yaml"
    suite.write_text(SUITE)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    args = [a.replace("{file}", str(suite)) for a in args]
    assert main(["run", "--suite", str(suite), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and message in err and "\n" not in err


def test_train_checks_its_result_file_and_report_its_page_first(capsys, never_trains):
    dataset = ["--dataset", "synthetic:tiny,count=60", "--set", "height=32", "--set", "width=96"]
    assert main(["train", "--approach", "crnn-gru", *dataset, "--out", "/proc/x/r.json"]) == 2
    assert "--out /proc/x/r.json: cannot write into /proc/x" in capsys.readouterr().err
    assert main(["report", "--out", "/proc/x/index.html"]) == 2
    assert "--out /proc/x/index.html: cannot write into /proc/x" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("budget", "message"),
    [("0s", "--budget 0s: give a positive duration"), ("-5m", "'-5m' is not a duration")],
)
def test_a_budget_must_be_a_positive_duration(budget, message, capsys, never_trains):
    assert main(["train", "--approach", "crnn", "--budget", budget]) == 2
    assert message in capsys.readouterr().err


def test_links_open_mlflows_ui_in_its_training_view(mlflow_store, capsys):
    """MLflow 3 opens an experiment in its GenAI view unless the link asks for the training one
    (its bundled UI reads the ``workflowType`` query parameter)."""
    experiment_id = mlflow.MlflowClient(mlflow_store).create_experiment("captcha-v2")
    link = training_view("captcha-v2", "http://127.0.0.1:5000")
    assert link == (
        f"http://127.0.0.1:5000/#/experiments/{experiment_id}/runs?workflowType=machine_learning"
    )
    bundle = Path(mlflow.__file__).parent / "server" / "js" / "build" / "static" / "js"
    assert any('get("workflowType")' in p.read_text() for p in bundle.glob("*.js"))
    assert main(["ui", "--no-serve", "--port", "5001"]) == 0
    out = capsys.readouterr().out
    assert f"127.0.0.1:5001/#/experiments/{experiment_id}/runs?workflowType=machine_learning" in out


def test_parameters_are_shown_rounded():
    shown = rounded({"lr": 0.00601975889024848, "batch_size": 64, "decoder": "beam"})
    assert shown == {"lr": 0.00602, "batch_size": 64, "decoder": "beam"}
    assert re.fullmatch(r"0\.00602", str(shown["lr"]))


def test_predict_says_when_a_run_logged_no_model(mlflow_store, tmp_path, capsys):
    from PIL import Image

    image = tmp_path / "abcde.png"
    Image.new("RGB", (200, 50)).save(image)
    client = mlflow.MlflowClient(mlflow_store)
    run = client.create_run(client.create_experiment("smoke"), tags={"suite": "smoke"})
    assert main(["predict", "--model", run.info.run_id, str(image)]) == 2
    err = capsys.readouterr().err
    assert f"run {run.info.run_id} logged no model: it is a run of suite 'smoke'" in err
    assert "log_models: true" in err


def test_mlflow_chart_sections_put_accuracy_first():
    """MLflow's UI orders the chart sections by prefix name: every metric a run logs is in a
    group, accuracy's sorts first and the losses second."""
    from bench.tracking import METRIC_GROUPS, metric_name

    assert sorted(METRIC_GROUPS)[:2] == ["accuracy", "loss"]
    assert metric_name("val_seq_acc") == "accuracy/val_seq_acc"
    assert metric_name("n_pruned") == "study/n_pruned" and metric_name("lr") == "progress/lr"


def test_runs_logged_before_the_groups_read_under_the_grouped_names():
    import pandas as pd

    from bench.report.data import grouped_metrics

    frame = pd.DataFrame(
        {"metrics.test_seq_acc": [0.9, None], "metrics.accuracy/test_seq_acc": [None, 0.8]}
    )
    assert grouped_metrics(frame)["metrics.accuracy/test_seq_acc"].tolist() == [0.9, 0.8]
    old_only = grouped_metrics(pd.DataFrame({"metrics.params": [5.0]}))
    assert old_only["metrics.size/params"].tolist() == [5.0]


@pytest.mark.parametrize("verbose", [False, True])
def test_mlflows_own_lines_show_only_with_verbose(verbose, tmp_path):
    """A new store's creation is logged by MLflow at INFO: hidden unless ``--verbose``."""
    import os
    import subprocess
    import sys

    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'new.db'}"}
    for inherited in ("MLFLOW_LOGGING_LEVEL", "MLFLOW_EXPERIMENT_ID"):  # set by earlier tests
        env.pop(inherited, None)
    command = [sys.executable, "-m", "bench", *(["--verbose"] if verbose else []), "report"]
    done = subprocess.run(
        [*command, "--out", str(tmp_path / "r.html")], capture_output=True, text=True, env=env
    )
    assert done.returncode == 2 and "error: " in done.stderr
    assert ("INFO mlflow" in done.stderr) is verbose, done.stderr


def test_mlflow_refusing_a_setting_is_one_error_line(tmp_path):
    """An experiment id in the environment that the store lacks: MLflow's error, one line."""
    import os
    import subprocess
    import sys

    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'new.db'}",
        "MLFLOW_EXPERIMENT_ID": "7",
    }
    done = subprocess.run(
        [sys.executable, "-m", "bench", "report", "--out", str(tmp_path / "r.html")],
        capture_output=True,
        text=True,
        env=env,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
    assert done.stderr.startswith("error: MLflow: ") and "`7` does not exist" in done.stderr
