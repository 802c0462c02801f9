"""Cross-validation as a split protocol: the folds' partition, the fold in the spec, a k-fold
suite end to end (every image tested once, the pooled table), and `run --plan`."""

from __future__ import annotations

import math

import mlflow
import pandas as pd
import pytest
import torch

from bench.cli import main
from bench.data import DataError, load_dataset
from bench.data.store import make_kfold_split
from bench.spec import make_spec
from bench.suite import SuiteError, load_suite
from bench.suite.plan import Probe, run_seconds, schedule

FILES = [f"{i:04d}.png" for i in range(103)]
TINY_SUITE = """
datasets: ["synthetic:tiny,count=60"]
approaches: [crnn-gru, lstm-columns]
seeds: [0]
folds: 3
set: {height: 32, width: 96, hidden: 16, epochs: 1}
tuning:
  trials: 0
"""


def test_folds_test_every_image_once_and_validate_inside_the_training_folds():
    splits = [make_kfold_split(FILES, seed=7, folds=5, fold=k) for k in range(5)]
    tested = torch.cat([s.test for s in splits])
    assert sorted(tested.tolist()) == list(range(len(FILES)))  # each image exactly once
    assert sorted(len(s.test) for s in splits) == [20, 20, 21, 21, 21]
    for s in splits:
        parts = [set(p.tolist()) for p in (s.train, s.val, s.test)]
        assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
        assert len(parts[0] | parts[1] | parts[2]) == len(FILES)
        assert len(s.val) == 10  # 10% of the images, from the other folds
    again = make_kfold_split(list(reversed(FILES)), seed=7, folds=5, fold=2)  # order-free
    assert sorted(FILES[::-1][i] for i in again.test) == sorted(FILES[i] for i in splits[2].test)
    other = make_kfold_split(FILES, seed=8, folds=5, fold=2)
    assert not torch.equal(other.test, splits[2].test)  # the split seed reshuffles


@pytest.mark.parametrize(
    ("folds", "fold", "message"),
    [(1, 0, "folds >= 2"), (5, 5, "0 <= fold < folds"), (60, 0, "too few for 60 folds")],
)
def test_bad_folds_are_data_errors(folds, fold, message):
    with pytest.raises(DataError, match=message):
        make_kfold_split(FILES, 0, folds, fold)


def test_the_fold_is_part_of_the_spec_and_checked():
    dataset = load_dataset("synthetic:tiny,count=60")
    kfold = {"split": "kfold", "folds": 3, "height": 32, "width": 96}
    specs = [make_spec("crnn-gru", dataset, kfold, fold=k) for k in range(3)]
    assert len({s.digest for s in specs}) == 3 and specs[1].params()["fold"] == 1
    assert specs[2].label == "crnn-gru seed 0 fold 2 synthetic:tiny,count=60"
    with pytest.raises(ValueError, match="fold=3 is out of range: use 0 to 2"):
        make_spec("crnn-gru", dataset, kfold, fold=3)
    with pytest.raises(ValueError, match="fold=1 needs split=kfold"):
        make_spec("crnn-gru", dataset, {"height": 32}, fold=1)
    with pytest.raises(ValueError, match="folds=1 is out of range"):
        make_spec("crnn-gru", dataset, {**kfold, "folds": 1})


def test_a_suites_folds_expand_its_finals_to_seeds_times_folds(tmp_path):
    path = tmp_path / "k.yaml"
    path.write_text("approaches: [crnn]\nseeds: [0, 1]\nfolds: 3\n")
    suite = load_suite(path)
    assert suite.replicates == [(s, f) for s in (0, 1) for f in range(3)]
    assert suite.final_overrides()["split"] == "kfold" and suite.common_set["folds"] == 3
    path.write_text("approaches: [crnn]\nfolds: 1\n")
    with pytest.raises(SuiteError, match="folds must be an integer >= 2"):
        load_suite(path)
    path.write_text("approaches: [crnn]\nfolds: 5\nset: {split: source}\n")
    with pytest.raises(SuiteError, match="folds: 5 and set"):
        load_suite(path)


def test_a_kfold_suite_tests_every_image_once_and_pools_them(tmp_path, mlflow_store):
    suite_file = tmp_path / "kfold.yaml"
    suite_file.write_text(TINY_SUITE)
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    out = tmp_path / "report" / "index.html"
    args = ["run", "--suite", str(suite_file), "--storage", storage, "--out", str(out), "--quiet"]
    assert main(args) == 0
    runs = mlflow.search_runs(experiment_names=["kfold"])
    assert len(runs) == 6 and set(runs["tags.fold"]) == {"0", "1", "2"}
    for approach, group in runs.groupby("tags.approach"):
        files = []
        for run_id in group.run_id:
            table = mlflow.artifacts.load_dict(f"runs:/{run_id}/predictions.json")
            files += [row[table["columns"].index("file")] for row in table["data"]]
        assert len(files) == 60 and len(set(files)) == 60, approach  # every image once
    table = pd.read_csv(out.parent / "leaderboard.csv")
    assert set(table.approach) == {"crnn-gru", "lstm-columns"}
    for row in table.itertuples():
        assert (row.n, row.folds, row.images) == (3, 3, 60)
        group = runs[runs["tags.approach"] == row.approach]
        correct = (
            group["metrics.accuracy/test_seq_acc"] * group["params.data.n_test"].astype(int)
        ).sum()
        assert row.seq_acc == pytest.approx(correct / 60)  # pooled over all 60 images
        assert 0 <= row.seq_acc_low <= row.seq_acc <= row.seq_acc_high <= 1
        assert len(str(row.per_fold).split()) == 3
    html = out.read_text()
    assert "Cross-validated" in html and "folds: lowest–highest" in html
    assert "estimated by `run --plan` at its start" in html


def test_plan_sizes_a_suite_without_creating_runs_or_studies(tmp_path, mlflow_store, capsys):
    suite_file = tmp_path / "kfold.yaml"
    suite_file.write_text(TINY_SUITE)
    db = tmp_path / "optuna.db"
    assert main(["run", "--suite", str(suite_file), "--storage", f"sqlite:///{db}", "--plan"]) == 0
    out = capsys.readouterr().out
    assert "0 tuning trials and 3 final trainings (1 seed x 3 folds) each" in out
    assert "estimated wall time:" in out and "steps_per_epoch" in out
    assert not db.exists()  # no study
    client = mlflow.MlflowClient(mlflow_store)
    assert client.search_experiments(filter_string="name = 'kfold'") == []  # no run


def test_run_seconds_count_epochs_budgets_and_evaluation():
    costs = Probe(step_s=0.5, eval_s=2.0, test_s=4.0, steps_per_epoch=10)  # 5 s an epoch
    epochs, seconds = run_seconds({"epochs": 3, "budget": 0.0}, costs, test=True)
    assert (epochs, seconds) == (3, 3 * 5 + 3 * 2 + 3 * 4 + 2.0)
    epochs, seconds = run_seconds({"epochs": 30, "budget": 12.0}, costs, test=False)
    assert (epochs, seconds) == (3, 12 + 3 * 2 + 3 * 2 + 2.0)  # the budget buys 3 epochs
    assert schedule([5, 4, 3, 3], 2) == 8 and schedule([5], 4) == 5
    assert math.isclose(schedule([1.0] * 10, 3), 4.0)


def test_an_unknown_fold_setting_is_refused_before_work(mlflow_store, capsys):
    code = main(["train", "--approach", "crnn", "--fold", "2", "--dataset", "synthetic:tiny"])
    assert code == 2 and "fold=2 needs split=kfold" in capsys.readouterr().err
    assert mlflow.MlflowClient(mlflow_store).search_runs(["0"]) == []
