"""The model registry against a real MLflow store: the first version is @champion, a later one
takes the alias only on a significant paired gain on the same test images, else @challenger."""

from __future__ import annotations

import mlflow
import pandas as pd
import pytest

import bench.champion as champion
from bench.cli import main
from bench.data import load_dataset
from bench.recognizer import read_images
from bench.tracking.models import load_recognizer
from tests.conftest import fit_tracked

TINY = "synthetic:tiny,count=60"
FILES = [f"{i:03d}.png" for i in range(40)]


def outcomes(right: int, files: list[str] = FILES) -> pd.DataFrame:
    """A predictions table whose first ``right`` images are read right."""
    return pd.DataFrame(
        {
            "file": files,
            "label": ["123"] * len(files),
            "prediction": ["123"] * right + ["000"] * (len(files) - right),
        }
    )


def test_the_champion_alias_moves_only_on_a_significant_gain(mlflow_store, monkeypatch, capsys):
    dataset = load_dataset(TINY)
    _, first = fit_tracked("lstm-columns", dataset, {"epochs": 1}, progress=False)
    _, second = fit_tracked("lstm-columns", dataset, {"epochs": 1}, seed=1, progress=False)
    # the runs' own test sets are 12 images: the paired outcomes are set here, the registry is real
    tables = {first: outcomes(10), second: outcomes(13)}
    monkeypatch.setattr(champion, "predictions", lambda run, *_: tables[run])
    name = "captcha-bench-synthetic-tiny-count-60"
    client = mlflow.MlflowClient(mlflow_store)

    assert main(["register", "--run", first]) in (None, 0)
    assert "version 1 as models:/" + name + "@champion (the first)" in capsys.readouterr().out

    # 3 gained, 0 lost: exact McNemar p = 0.25, not significant: a challenger
    decision = champion.register(second)
    assert (decision.version, decision.alias, decision.gained, decision.lost) == (
        "2",
        "challenger",
        3,
        0,
    )
    assert decision.p == pytest.approx(0.25)
    assert str(client.get_model_version_by_alias(name, "champion").version) == "1"
    assert str(client.get_model_version_by_alias(name, "challenger").version) == "2"

    # the same run again: the version it is, nothing new
    again = champion.register(second)
    assert (again.version, again.alias, again.already) == ("2", "challenger", True)
    assert "holds this run already" in champion.describe(again)

    # 20 gained, 0 lost (p = 1.9e-6): the alias moves
    _, third = fit_tracked("lstm-columns", dataset, {"epochs": 1}, seed=2, progress=False)
    tables[third] = outcomes(30)
    decision = champion.register(third)
    assert decision.alias == "champion" and decision.p < 1e-5
    promoted = client.get_model_version_by_alias(name, "champion")
    assert str(promoted.version) == "3" and promoted.run_id == third  # the version keeps its run
    assert "significantly better than version 1" in promoted.tags["verdict"]

    # predict through the alias, as a user would
    model, meta = load_recognizer(f"models:/{name}@champion")
    assert len(read_images(model, meta, dataset.source.files[:2])) == 2

    # another test set cannot be compared; a level outside (0, 1) is refused
    _, fourth = fit_tracked("lstm-columns", dataset, {"epochs": 1}, seed=3, progress=False)
    tables[fourth] = outcomes(30, [f"other{i}.png" for i in range(40)])
    with pytest.raises(ValueError, match="tested on different images"):
        champion.register(fourth)  # against the champion, now the third run
    assert len(client.search_model_versions(f"name = '{name}'")) == 3  # nothing registered
    with pytest.raises(ValueError, match="--alpha 1.5"):
        champion.register(second, alpha=1.5)


def test_registered_names_take_any_dataset():
    assert champion.registered_name("captcha-v2") == "captcha-bench-captcha-v2"
    assert champion.registered_name("folder:/a b/c") == "captcha-bench-folder--a-b-c"
