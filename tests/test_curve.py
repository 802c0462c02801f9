"""Learning curves: nested training subsets, optimizer steps held, `bench curve` end to end."""

from __future__ import annotations

import itertools
import math

import mlflow
import pandas as pd
import pytest

from bench.cli import main
from bench.curve import curve_specs, images_needed, parse_sizes, steps_per_epoch
from bench.data import DataError, load_dataset
from bench.data.store import make_kfold_split, make_split, nested_subset
from bench.errors import ReportError
from bench.report import load_comparison
from bench.spec import Recipe

FILES = [f"{i:04d}.png" for i in range(200)]
TINY = "synthetic:tiny,count=60"
SMALL = {"height": 32, "width": 96, "hidden": 16, "epochs": 2, "batch_size": 8}


@pytest.mark.parametrize(
    "split", [make_split(FILES, 3), make_kfold_split(FILES, 3, 5, 2)], ids=["benchmark", "kfold"]
)
def test_subsets_are_nested_and_leave_validation_and_test_alone(split):
    subsets = [nested_subset(split, size, seed=3) for size in (10, 40, 90, len(split.train))]
    for small, large in itertools.pairwise(subsets):
        assert set(small.train.tolist()) < set(large.train.tolist())
    assert set(subsets[-1].train.tolist()) == set(split.train.tolist())
    assert [len(s.train) for s in subsets[:3]] == [10, 40, 90]
    for subset in subsets:
        assert subset.val.equal(split.val) and subset.test.equal(split.test)
    other = nested_subset(split, 40, seed=4)  # another split seed draws other images
    assert set(other.train.tolist()) != set(subsets[1].train.tolist())
    with pytest.raises(
        DataError, match=rf"train_size=999: the training part has {len(split.train)}"
    ):
        nested_subset(split, 999, seed=3)


def test_every_approach_gets_the_same_images_and_the_size_is_logged_data():
    dataset = load_dataset(TINY)
    trains = []
    for approach in ("crnn-gru", "lstm-columns"):
        spec = Recipe.of(approach, dataset, {**SMALL, "train_size": 12}).spec()
        store = dataset.store(*spec.cfg.image_size)
        split = dataset.split(store, spec.cfg.split, train_size=spec.cfg.train_size)
        trains.append([store.files[i] for i in split.train.tolist()])
        assert dataset.describe(store, split)["n_train"] == 12
    assert trains[0] == trains[1]


def test_points_hold_the_full_recipes_optimizer_steps():
    dataset = load_dataset(TINY)
    recipe = Recipe.of("lstm-columns", dataset, {**SMALL, "epochs": 3})
    points = curve_specs(recipe, dataset, parse_sizes("5,17,all"), seeds=[0, 1])
    assert [(n, spec.seed) for n, spec in points] == [
        (5, 0),
        (5, 1),
        (17, 0),
        (17, 1),
        (42, 0),
        (42, 1),
    ]  # 60 images: 42 train at full size
    full = recipe.hparams()
    steps = 3 * steps_per_epoch(42, full)
    for n, spec in points:
        per_epoch = steps_per_epoch(n, spec.hparams)
        assert 0 <= spec.cfg.epochs * per_epoch - steps < per_epoch  # held to within an epoch
        assert spec.cfg.train_size == (0 if n == 42 else n)
    assert points[0][1].cfg.epochs == math.ceil(steps / 1)  # 5 images: one step an epoch
    with pytest.raises(ValueError, match="more than lstm-columns's training part"):
        curve_specs(recipe, dataset, [43], seeds=[0])
    with pytest.raises(ValueError, match="--sizes 0 tests the starting weights untrained"):
        curve_specs(recipe, dataset, [0], seeds=[0])


def test_a_zero_shot_point_is_the_starting_model_tested_once():
    dataset = load_dataset(TINY)
    start = "run:" + "a" * 32  # checked for a model when a run starts, not here
    recipe = Recipe.of("lstm-columns", dataset, {**SMALL, "init": start})
    points = curve_specs(recipe, dataset, parse_sizes("0,5"), seeds=[0, 1])
    assert [(n, spec.seed, spec.cfg.epochs) for n, spec in points][:1] == [(0, 0, 0)]
    assert [n for n, _ in points] == [0, 5, 5]  # untrained, a second seed would repeat it
    assert all(spec.cfg.init == start for _, spec in points)


def test_sizes_parse_in_order_and_bad_ones_are_refused():
    assert parse_sizes("all, 200,50") == [50, 200, "all"]
    assert parse_sizes("50,0") == [0, 50]
    for bad in ("-1,10", "ten", "10,10", "", "00"):
        with pytest.raises(ValueError, match="--sizes"):
            parse_sizes(bad)


def test_images_needed_is_the_smallest_size_at_the_level():
    table = pd.DataFrame(
        {
            "approach": ["a"] * 5 + ["b"] * 2,
            "start": ["scratch"] * 3 + ["run:x"] * 2 + ["scratch"] * 2,
            "train_images": [50, 100, 200, 50, 100, 50, 100],
            "test_seq_acc": [0.5, 0.92, 0.97, 0.95, 0.98, 0.2, 0.6],
        }
    )
    needed = images_needed(table, 0.9)
    assert needed[("a", "scratch")] == 100.0 and needed[("a", "run:x")] == 50.0
    assert math.isnan(needed[("b", "scratch")])
    assert images_needed(table, 0.95)[("a", "scratch")] == 200.0


def test_curve_command_trains_each_point_once_and_tabulates(tmp_path, mlflow_store, capsys):
    args = ["curve", "--approach", "lstm-columns", "--dataset", TINY, "--sizes", "10,all"]
    args += ["--seeds", "0", "--quiet", "--out", str(tmp_path / "c")]
    args += [f"--set={k}={v}" for k, v in SMALL.items()]
    assert main(args) in (None, 0)
    table = pd.read_csv(tmp_path / "c" / "curve.csv")
    assert table.train_images.tolist() == [10, 42] and table.runs.tolist() == [1, 1]
    assert table.steps.tolist() == [12, 12] and table.epochs.tolist() == [6, 2]  # steps held
    assert {"images_for_90%", "images_for_95%", "test_seq_acc_low"} <= set(table.columns)
    runs = mlflow.MlflowClient(mlflow_store).search_runs(
        [mlflow.get_experiment_by_name("curves").experiment_id]
    )
    assert sorted(r.data.tags["curve_size"] for r in runs) == ["10", "42"]
    assert {r.data.params["train_size"] for r in runs} == {"10", "0"}
    assert main(args) in (None, 0)  # again: every point is kept, nothing trains
    assert len(mlflow.MlflowClient(mlflow_store).search_runs([runs[0].info.experiment_id])) == 2
    assert "2 runs; table in" in capsys.readouterr().out
    with pytest.raises(ReportError, match="no finished training runs"):
        load_comparison(["curves"])  # curve points are not leaderboard runs
    # a page of the curves alone: the section and its provenance, no leaderboard or tuning
    page = tmp_path / "page" / "index.html"
    assert main(
        ["report", "--experiment", "curves", "--curves", str(tmp_path / "c"), "--out", str(page)]
    ) in (None, 0)
    html = page.read_text()
    assert 'id="data-efficiency"' in html and 'id="tuning"' not in html
    assert "python -m bench report --experiment curves --curves" in html  # how to rebuild it
    assert "bench run --suite" not in html and not (page.parent / "leaderboard.csv").exists()
