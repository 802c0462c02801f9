"""The robustness track: corruptions deterministic per image and graded by severity, a logged
model read on its corrupted test images without retraining (logged back to its run, reused on a
second call), and the tables' tests."""

from __future__ import annotations

import mlflow
import numpy as np
import pandas as pd
import pytest
from PIL import Image

import bench.robustness
from bench.cli import main
from bench.data import load_dataset
from bench.data.corruptions import (
    CORRUPTIONS,
    corrupt,
    corrupted_files,
    image_seed,
    parse_corruptions,
    parse_severities,
)
from bench.robustness import Readings, corruption_table, summary_table
from bench.tracking.query import run_table
from tests.conftest import fit_tracked

TINY = "synthetic:tiny,count=60"


@pytest.fixture(scope="module")
def image() -> np.ndarray:
    dataset = load_dataset(TINY)
    with Image.open(dataset.source.files[0]) as img:
        return np.asarray(img.convert("RGB"))


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_each_corruption_is_deterministic_per_image_and_grows_with_severity(corruption, image):
    levels = range(1, 6)
    copies = [corrupt(image, corruption, s, image_seed(corruption, s, "a.png")) for s in levels]
    again = [corrupt(image, corruption, s, image_seed(corruption, s, "a.png")) for s in levels]
    assert all(np.array_equal(a, b) for a, b in zip(copies, again, strict=True))
    assert all(c.shape == image.shape and c.dtype == np.uint8 for c in copies)
    change = [np.abs(c.astype(int) - image).mean() for c in copies]
    assert change[0] > 0, "severity 1 leaves the image as it was"
    assert change[-1] > change[0], f"severity 5 changes no more than 1: {change}"


def test_the_seed_depends_on_the_image_and_the_cache_holds_the_same_pixels(tmp_path, image):
    assert image_seed("lines", 2, "a.png") != image_seed("lines", 2, "b.png")
    assert image_seed("lines", 2, "a.png") == 2738016692  # crc32: the same on every machine
    other = corrupt(image, "gaussian_noise", 3, image_seed("gaussian_noise", 3, "b.png"))
    mine = corrupt(image, "gaussian_noise", 3, image_seed("gaussian_noise", 3, "a.png"))
    assert not np.array_equal(mine, other)

    Image.fromarray(image).save(tmp_path / "a.png")
    (path,) = corrupted_files(tmp_path, ["a.png"], "f" * 64, "gaussian_noise", 3)
    assert np.array_equal(np.asarray(Image.open(path)), mine)
    written = path.stat().st_mtime_ns
    assert corrupted_files(tmp_path, ["a.png"], "f" * 64, "gaussian_noise", 3) == [path]
    assert path.stat().st_mtime_ns == written  # cached: not drawn again


def test_options_name_the_bad_value():
    assert parse_corruptions(None) == list(CORRUPTIONS)
    assert parse_severities("2-4") == [2, 3, 4] and parse_severities("5,1") == [1, 5]
    with pytest.raises(ValueError, match="--corruptions blur,fog: fog; choose from"):
        parse_corruptions("blur,fog")
    with pytest.raises(ValueError, match="--severities 0-3: give levels of 1-5"):
        parse_severities("0-3")


def readings(model: str, seed: int, right: dict[tuple[str, int], list[bool]]) -> Readings:
    rows = [
        {
            "file": f"{i}.png",
            "label": "ab",
            "corruption": corruption,
            "severity": severity,
            "prediction": "ab" if ok else "ax",
        }
        for (corruption, severity), oks in right.items()
        for i, ok in enumerate(oks)
    ]
    return Readings(f"run-{model}-{seed}", model, seed, pd.DataFrame(rows))


def test_tables_mark_a_drop_as_significant_only_when_it_is():
    n = 40
    strong = {("clean", 0): [True] * n, ("blur", 1): [True] * (n - 1) + [False]}
    weak = {("clean", 0): [True] * n, ("blur", 1): [True] * 10 + [False] * (n - 10)}
    near = {("clean", 0): [True] * n, ("blur", 1): [True] * (n - 2) + [False] * 2}
    runs = [readings(m, s, r) for m, r in (("strong", strong), ("near", near)) for s in (0, 1)]
    runs.append(readings("weak", 0, weak))
    table = corruption_table(runs).set_index(["model", "corruption"])
    assert table.loc[("strong", "blur")].seq_acc == pytest.approx((n - 1) / n)
    assert table.loc[("strong", "blur")].lost == 2 and not table.loc[("strong", "blur")].significant
    assert table.loc[("weak", "blur")].lost == 30 and table.loc[("weak", "blur")].significant
    assert table.loc[("weak", "blur")].change == pytest.approx(-0.75)

    summary = summary_table(runs).set_index("model")
    assert list(summary.index) == ["strong", "near", "weak"]  # the best first
    # one image apart: no significant difference (the test agrees with the interval)
    assert summary.loc["near", "diff_low"] < 0 and summary.loc["near", "diff_high"] >= 0
    assert summary.loc["near", "p_holm"] > 0.5 and not summary.loc["near", "significant"]
    assert summary.loc["weak", "relative_mild"] == pytest.approx(0.25)
    assert summary.loc["weak", "diff"] == pytest.approx(-(n - 1) / n + 0.25)
    assert summary.loc["weak", "diff_high"] < 0 and summary.loc["weak", "significant"]


def test_robustness_reads_logged_models_logs_back_and_reuses(tmp_path, mlflow_store, capsys):
    dataset = load_dataset(TINY)
    _, ce = fit_tracked("ce-crnn", dataset, {"epochs": 1, "hidden": 16}, progress=False)
    _, ctc = fit_tracked("crnn-modified", dataset, {"epochs": 1, "hidden": 16}, progress=False)
    out = tmp_path / "robustness"
    argv = ["robustness", "--run", ce, ctc, "--corruptions", "blur,occlusion"]
    assert main([*argv, "--severities", "1", "--out", str(out), "--quiet"]) in (None, 0)
    # a second call reads only what is new (severity 5), and logs it beside the first
    assert main([*argv, "--severities", "1,5", "--out", str(out), "--quiet"]) in (None, 0)

    table = pd.read_csv(out / "robustness.csv")
    assert len(table) == 2 * (1 + 2 * 2)  # per model: clean, two corruptions at two severities
    assert set(table.images) == {12}  # the 12 test images of 60
    client = mlflow.MlflowClient(mlflow_store)
    for run_id, model in ((ce, "ce-crnn"), (ctc, "crnn-modified")):
        run = client.get_run(run_id)
        clean = table[table.model.str.startswith(model + " (") & (table.corruption == "clean")]
        assert clean.seq_acc.item() == pytest.approx(run.data.metrics["accuracy/test_seq_acc"])
        assert clean.cer.item() == pytest.approx(run.data.metrics["accuracy/test_cer"])
        assert "robustness/robust_seq_acc_s1_3" in run.data.metrics
        assert [a.path for a in client.list_artifacts(run_id, "robustness")] == [
            "robustness/v1.json"
        ]
        logged = run_table(run_id, "robustness/v1.json")
        assert len(logged) == 12 * (1 + 2 * 2)  # each image once per corruption and severity
    page = (out / "index.html").read_text()
    assert 'id="robustness"' in page and "occlusion" in page
    assert "Leaderboard</h3>" not in page  # the section and provenance alone
    assert "--robustness" in page and "--sections-only" in page  # the command that rebuilds it

    def no_new_reading(*args, **kwargs):
        raise AssertionError("read again what the run has logged")

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(bench.robustness, "corrupted_files", no_new_reading)
        assert main([*argv, "--severities", "5", "--out", str(out), "--quiet"]) in (None, 0)
    assert set(pd.read_csv(out / "robustness.csv").severity) == {0, 5}


def test_bad_runs_are_refused_in_one_line_before_any_reading(tmp_path, mlflow_store, capsys):
    settings = {"epochs": 1, "hidden": 16}
    _, one = fit_tracked("crnn-modified", load_dataset(TINY), settings, progress=False)
    other = load_dataset("synthetic:tiny,count=40")
    _, two = fit_tracked("crnn-modified", other, settings, progress=False)
    _, none = fit_tracked("crnn-modified", other, settings, log_model=False, progress=False)
    out = ["--out", str(tmp_path / "r"), "--quiet"]
    capsys.readouterr()
    assert main(["robustness", "--run", one, two, *out]) == 2
    assert f"run {two} was tested on other images than run {one}" in capsys.readouterr().err
    assert main(["robustness", "--run", none, *out]) == 2
    assert f"run {none} logged no model" in capsys.readouterr().err
    assert main(["robustness", "--run", one, "--severities", "6", *out]) == 2
    assert "--severities 6: give levels of 1-5" in capsys.readouterr().err
    assert not (tmp_path / "r" / "robustness.csv").exists()


def test_a_model_is_named_by_its_start_and_the_settings_it_changed():
    from bench.robustness import model_name
    from bench.spec import resolve_hparams

    hparams = resolve_hparams("ce-crnn", {})
    assert model_name("ce-crnn", {**hparams, "mean": [0.5], "std": [0.2]}) == "ce-crnn"
    changed = {**hparams, "rotate": 10.0, "init": "run:abc"}
    assert model_name("ce-crnn", changed) == "ce-crnn, pretrained (rotate=10.0)"
