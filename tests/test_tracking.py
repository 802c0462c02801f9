import tempfile

import mlflow
import pandas as pd
import pytest
import torch
from PIL import Image

from bench.data import load_dataset
from bench.metrics import GAP, confusion_pairs
from bench.recognizer import read_images
from bench.tracking import metric_name, tracking_uri
from bench.tracking.models import load_recognizer
from tests.conftest import fit_tracked

TINY = "synthetic:tiny,count=120"
FAST = {"height": 32, "width": 96, "hidden": 16, "epochs": 2, "batch_size": 32}


def test_tracking_uri_defaults_to_sqlite_in_the_working_folder(monkeypatch):
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    assert tracking_uri() == "sqlite:///mlflow.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5000")
    assert tracking_uri() == "http://127.0.0.1:5000"


def test_a_logged_run_holds_everything_to_reproduce_it(mlflow_store, monkeypatch):
    # a run this small can end within a second, before a 1 s monitor publishes anything
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.1")
    dataset = load_dataset(TINY)
    result, run_id = fit_tracked(
        "lstm-columns",
        dataset,
        FAST,
        seed=3,
        tags={"suite": "unit"},
        log_model=False,
        progress=False,
    )
    run = mlflow.MlflowClient(mlflow_store).get_run(run_id)
    assert run.info.status == "FINISHED"
    params, metrics, tags = run.data.params, run.data.metrics, run.data.tags
    for key, value in result.hparams.items():
        assert params[key] == str(value)
    assert params["approach"] == "lstm-columns" and params["seed"] == "3"
    assert params["data.fingerprint"] == dataset.source.fingerprint
    assert params["data.split_digest"] == result.data["split_digest"]
    assert (params["data.n_train"], params["data.n_val"], params["data.n_test"]) == (
        "84",
        "12",
        "24",
    )
    for key in ("python", "torch", "timm", "git_commit", "device"):
        assert params[key]
    assert tags["approach"] == "lstm-columns" and tags["suite"] == "unit" and tags["seed"] == "3"
    assert tags["dataset"] == TINY
    history = mlflow.MlflowClient(mlflow_store).get_metric_history(run_id, "accuracy/val_seq_acc")
    assert [m.step for m in history] == [1, 2]
    for key in (
        "train_loss",
        "val_loss",
        "val_char_acc",
        "val_cer",
        "lr",
        "epoch_seconds",
        "img_per_s",
    ):
        name = metric_name(key)  # grouped by a prefix where it is no result (time/, progress/)
        assert len(mlflow.MlflowClient(mlflow_store).get_metric_history(run_id, name)) == 2
    assert metrics["accuracy/test_seq_acc"] == pytest.approx(result.test["seq_acc"])
    assert metrics["accuracy/test_cer"] == pytest.approx(result.test["cer"])
    assert metrics["size/params"] == result.params and metrics["size/flops"] == result.flops
    assert metrics["time/train_seconds"] > 0  # grouped in MLflow's UI by the prefix
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(
        metrics
    )  # MLflow's system metrics, sampled every 0.1 s here
    artifacts = {a.path for a in mlflow.MlflowClient(mlflow_store).list_artifacts(run_id)}
    assert {"predictions.json", "misread.png", "confusion.png", "bench.json"} <= artifacts
    table = mlflow.artifacts.load_dict(f"runs:/{run_id}/predictions.json")  # an MLflow table
    predictions = pd.DataFrame(table["data"], columns=table["columns"])
    assert list(predictions.columns) == ["file", "label", "prediction", "correct", "cer", "split"]
    assert len(predictions) == 24 and set(predictions.label) <= set(dataset.source.labels)
    assert all(isinstance(label, str) for label in predictions.label) and set(
        predictions.split
    ) == {"test"}
    (data_input,) = run.inputs.dataset_inputs
    assert data_input.dataset.name == TINY
    assert data_input.dataset.digest == dataset.source.fingerprint[:32]
    input_tags = {t.key: t.value for t in data_input.tags}
    assert input_tags["mlflow.data.context"] == "training" and input_tags["n_test"] == "24"
    experiment = mlflow.MlflowClient(mlflow_store).get_experiment(run.info.experiment_id)
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    local = mlflow.artifacts.download_artifacts(f"runs:/{run_id}/confusion.png")
    assert Image.open(local).size[0] > 100


def test_model_round_trip_reads_the_same_as_the_trained_model(tmp_path, monkeypatch):
    dataset = load_dataset(TINY)
    result, run_id = fit_tracked(
        "crnn-modified", dataset, {"epochs": 1, "hidden": 16}, progress=False
    )
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    model, meta = load_recognizer(run_id)
    assert not any(temp.iterdir())  # the downloaded model is not left behind
    assert meta["approach"] == "crnn-modified"
    assert meta["charset"] == "0123456789abcdefghijklmnopqrstuvwxyz"  # source 001's alphabet
    files = dataset.source.files[:5]
    store = dataset.store(1, 32, 176, "resize-convert")  # source 001's decoding
    images = store.images[:5]
    with torch.no_grad():
        expected = result.codec.decode(result.model.eval()((images.float() / 255 - 0.0) * 255))
    assert model.predict(images.numpy()) == expected  # pyfunc: strings out
    assert read_images(model, meta, files) == expected


def test_failed_and_interrupted_runs_are_not_left_running(mlflow_store):
    client = mlflow.MlflowClient(mlflow_store)
    dataset = load_dataset(TINY)
    with pytest.raises(ValueError, match="emits 2 steps"):
        fit_tracked("lstm-columns", dataset, {**FAST, "width": 2}, progress=False)

    def interrupt(epoch, stats):
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        fit_tracked("lstm-columns", dataset, FAST, callbacks=(interrupt,), progress=False)
    runs = client.search_runs([client.get_experiment_by_name(TINY).experiment_id])
    by_status = {r.info.status: r for r in runs}
    assert set(by_status) == {"FAILED", "KILLED"}
    assert "emits 2 steps" in by_status["FAILED"].data.tags["error"]
    assert by_status["KILLED"].data.tags["error"] == "interrupted"


def test_confusion_pairs_align_substitutions_insertions_and_deletions():
    pairs = confusion_pairs(["abd", "ab", "abcc"], ["abc", "abc", "abc"])
    assert pairs[("c", "d")] == 1  # substitution
    assert pairs[("c", GAP)] == 1  # deletion
    assert pairs[(GAP, "c")] == 1  # insertion
    assert pairs[("a", "a")] == 3 and pairs[("b", "b")] == 3


def test_processes_starting_together_on_a_new_store_create_it_once(tmp_path):
    """Two trainings started at once on a new SQLite store: both run (MLflow's migration, run by
    two processes at once, failed one of them with 'duplicate column name')."""
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_EXPERIMENT")}
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'new.db'}"
    code = "from bench.tracking import use_experiment; print(use_experiment('together'))"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", code], env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE
        )
        for _ in range(3)
    ]
    outcomes = [(w.wait(timeout=300), w.stdout.read().decode().strip()) for w in workers]
    assert [code for code, _ in outcomes] == [0, 0, 0]
    assert len({experiment for _, experiment in outcomes}) == 1  # one experiment for all
