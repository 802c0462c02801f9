import itertools
import math
import re
import shutil
import subprocess
from pathlib import Path
from types import SimpleNamespace

import matplotlib
import mlflow
import numpy as np
import pandas as pd
import pytest
from matplotlib.colors import to_hex
from matplotlib.ticker import MaxNLocator, PercentFormatter

from bench import metrics
from bench.data import load_dataset
from bench.metrics import per_image
from bench.report import ReportError, build_report, figures, load_comparison, style
from bench.report.data import training_seconds
from bench.report.provenance import rebuild_commands, training_setup
from bench.report.stats import (
    bootstrap_mean,
    bootstrap_ratio,
    first_epoch_reaching,
    first_time_reaching,
    holm,
    mcnemar_exact,
    pareto_front,
)
from bench.report.tables import CSV_COLUMNS, best_marks, leaderboard, paired_tests
from bench.spec import Recipe
from bench.tracking import log_metrics
from bench.tune import TuneConfig, tune
from tests.conftest import fit_tracked, write_images

HOSTILE_EXPERIMENT = "exp <script>alert('x')</script>"
FAST = {
    "height": 32,
    "width": 96,
    "hidden": 16,
    "epochs": 2,
    "batch_size": 32,
    "optimizer": "adam",
    "lr": 3e-3,
}
TINY_CNN = {
    "backbone": "test_resnet",
    "height": 32,
    "width": 96,
    "epochs": 2,
    "batch_size": 32,
    "rotate": 0.0,
    "brightness": 0.0,
    "contrast": 0.0,
}

ABLATIONS = Path(__file__).resolve().parents[1] / "reports" / "ablations"


@pytest.fixture(scope="module")
def store(tmp_path_factory, mlflow_template, bench_cache):
    """A small real MLflow store: 2 approaches x 2 seeds, a tuning study, a hostile dataset."""
    root = tmp_path_factory.mktemp("report-store")
    db = root / "mlflow.db"
    shutil.copy(mlflow_template, db)
    uri = f"sqlite:///{db}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", uri)
        mp.chdir(root)
        dataset = load_dataset("synthetic:tiny,count=200")
        for seed in (0, 1):
            fit_tracked(
                "lstm-columns",
                dataset,
                FAST,
                seed=seed,
                experiment=HOSTILE_EXPERIMENT,
                tags={"suite": "unit"},
                log_model=False,
                progress=False,
            )
            fit_tracked(
                "multihead",
                dataset,
                TINY_CNN,
                seed=seed,
                experiment=HOSTILE_EXPERIMENT,
                tags={"suite": "unit"},
                log_model=False,
                progress=False,
            )
        hostile = root / "hostile"
        rng = np.random.default_rng(0)
        labels = {"".join(rng.choice(list("<>\"'&ab"), 3)) for _ in range(60)}
        write_images(hostile, sorted(labels), size=(96, 32))
        fit_tracked(
            "lstm-columns",
            load_dataset(f"folder:{hostile}"),
            {**FAST, "epochs": 1},
            experiment=HOSTILE_EXPERIMENT,
            tags={"suite": "unit"},
            log_model=False,
            progress=False,
        )
        tune(
            TuneConfig(
                recipe=Recipe.of(
                    "lstm-columns", load_dataset("synthetic:tiny,count=200"), {**FAST, "epochs": 1}
                ),
                trials=3,
                storage=f"sqlite:///{root / 'optuna.db'}",
                suite="unit",
                pruner="none",
                experiment=HOSTILE_EXPERIMENT,
                progress=False,
            )
        )
    return uri, root


@pytest.fixture
def report(store, monkeypatch) -> str:
    uri, root = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    out = build_report(
        root / "report" / "index.html", experiments=[HOSTILE_EXPERIMENT], ablations=ABLATIONS
    )
    return out.read_text()


def section_numbers(html: str) -> list[int]:
    """The numbers of the numbered headings, in page order."""
    return [int(n) for n in re.findall(r"<h[23][^>]*>(\d+)\. ", html)]


def test_every_section_is_present(report):
    for heading in (
        "1. Leaderboard",
        "2. Which differences are real",
        "3. Accuracy against cost",
        "4. Learning curves",
        "5. Accuracy against training time",
        "6. Error analysis",
        "7. Tuning",
        "8. What matters: ablations",
        "9. Provenance",
    ):
        assert heading in report
    # a figure, or where its runs read no image right (2 epochs of tiny runs may not) its note
    assert report.count("<svg") + report.count(f'<p class="note">{figures.NOTHING_READ}</p>') >= 6
    assert "data:image/png;base64," in report  # the misread gallery, embedded
    assert "Every approach had the same tuning budget: 3 trials of 1 epoch," in report
    # every run carries the suite tag "unit": the suite's commands rebuild the page, ablations too
    assert f"<code>python -m bench run --suite unit --ablations {ABLATIONS}</code>" in report
    assert f"<code>python -m bench report --suite unit --ablations {ABLATIONS} --out " in report


def test_sections_are_numbered_in_order_without_gaps(report, store, monkeypatch, tmp_path):
    """Per dataset 1-6, then the shared sections on from 7, whichever optional ones are there."""
    assert "Failed or interrupted runs" not in report
    assert section_numbers(report) == [*range(1, 7), *range(1, 7), 7, 8, 9]  # two datasets
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store[0])
    bare = build_report(tmp_path / "r.html", [HOSTILE_EXPERIMENT])
    assert section_numbers(bare.read_text()) == [*range(1, 7), *range(1, 7), 7, 8]  # no ablations


def test_empty_panels_say_why(report):
    """The hostile dataset's runs trained one epoch: no curve, one line instead."""
    assert report.count("1 epoch per run: no curve to draw") == 2  # per epoch and per second
    curves = pd.DataFrame(
        {"approach": ["a", "b"], "seed": [0, 0], "epoch": [1, 1], "val_seq_acc": [0.5, 0.2]}
    )
    assert figures.learning_curves(curves.assign(val_loss=1.0)).note.startswith("1 epoch")
    assert figures.time_curves(curves.assign(elapsed=np.nan)).note.startswith("no training times")
    trials = pd.DataFrame({"trial": [0, 1], "state": ["pruned", "failed"], "value": [0.5, np.nan]})
    assert figures.optimization_history(trials).svg is None
    assert "no completed trial" in figures.optimization_history(trials).note


def test_what_matters_shows_the_checked_in_ablations(report):
    """The alphabet ablation (crnn, 3 seeds): its rows, paired difference and exact test."""
    section = report[report.index('id="what-matters"') :]
    assert "crnn-alphabet" in section and "99.04%" in section and "32.53%" in section
    assert '+66.51% <span class="ci">(+63.62% to +69.23%)</span>' in section
    assert "415 / 0" in section
    assert "significant" in section


def test_report_needs_nothing_else_to_be_viewed(report):
    assert "<script" not in report and "<link" not in report
    assert not re.search(r"""(src|href)=["'](?!data:|#)""", report)
    assert "@import" not in report
    assert not re.search(r"url\((?!#)", report)  # only the SVGs' own clip paths


def test_data_and_user_strings_are_escaped(report):
    assert "alert('x')" not in report and "<script>alert" not in report
    assert "&lt;script&gt;" in report
    for label in re.findall(r"<code>([^<]*)</code>", report):
        assert '"' not in label and "'" not in label  # quotes escaped as entities


def test_leaderboard_means_match_the_store(store, monkeypatch):
    uri, _ = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    comparison = load_comparison([HOSTILE_EXPERIMENT])
    runs = comparison.runs[comparison.runs["tags.dataset"] == "synthetic:tiny,count=200"]
    table = leaderboard(comparison, runs).set_index("approach")
    client = mlflow.MlflowClient(uri)
    for approach in ("lstm-columns", "multihead"):
        ids = runs[runs["tags.approach"] == approach].run_id
        values = [client.get_run(i).data.metrics["accuracy/test_seq_acc"] for i in ids]
        assert table.loc[approach, "n"] == 2
        assert table.loc[approach, "seq_acc"] == pytest.approx(np.mean(values))
        # the interval resamples each seed's test images (read from its predictions.csv)
        counts = [per_image(comparison.predictions(i)) for i in ids]
        point, low, high = bootstrap_ratio([c.distance for c in counts], [c.length for c in counts])
        assert (table.loc[approach, "cer_low"], table.loc[approach, "cer_high"]) == (low, high)
        assert point == pytest.approx(table.loc[approach, "cer"])
        for short in ("seq_acc", "char_acc", "cer"):
            low, high = table.loc[approach, f"{short}_low"], table.loc[approach, f"{short}_high"]
            assert 0 <= low <= table.loc[approach, short] <= high
            worst = max((c.distance / c.length).max() for c in counts)
            assert high <= (1 if short != "cer" else worst)
        # training seconds: elapsed_seconds as logged (validation excluded), for runs without
        # it the running sum of epoch_seconds (validation included)
        history = comparison.history(ids.iloc[0])
        summed = history.epoch_seconds.cumsum()
        if history.elapsed_seconds.notna().all():
            assert history.elapsed.tolist() == history.elapsed_seconds.tolist()
            assert (history.elapsed <= summed + 1e-6).all()
        else:
            assert history.elapsed.tolist() == pytest.approx(summed.tolist())
        assert history.elapsed.is_monotonic_increasing
        assert table.loc[approach, "timed"] == 2
    tests = paired_tests(comparison, runs, table.index[0])
    assert len(tests) == 1 and tests[0]["seeds"] == 2 and tests[0]["items"] == 2 * 40
    assert -1 <= tests[0]["low"] <= tests[0]["diff"] <= tests[0]["high"] <= 1


def test_missing_pieces_become_notes_and_bad_experiments_errors(store, monkeypatch, tmp_path):
    uri, _ = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    html = build_report(tmp_path / "r.html", experiments=[HOSTILE_EXPERIMENT]).read_text()
    assert "a single seed: their interval says nothing" in html  # the hostile dataset: one run
    with pytest.raises(ReportError, match="unknown experiment 'nope'"):
        build_report(tmp_path / "x.html", experiments=["nope"])
    mlflow.set_tracking_uri(uri)
    mlflow.create_experiment("empty one")
    with pytest.raises(ReportError, match="no runs in experiment"):
        build_report(tmp_path / "x.html", experiments=["empty one"])


def test_building_leaves_no_temporary_files(store, monkeypatch, tmp_path):
    import tempfile

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store[0])
    temp = tmp_path / "temp"
    temp.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(temp))
    build_report(tmp_path / "r.html", [HOSTILE_EXPERIMENT])  # downloads the misread gallery
    assert not any(temp.iterdir())


def test_no_ablations_no_section(store, monkeypatch, tmp_path):
    """Only a folder of tables given with --ablations adds the section: `bench report` without
    it has none, even run beside the checked-in reports/ablations; nor has a folder of none."""
    from bench.cli import main

    monkeypatch.setenv("MLFLOW_TRACKING_URI", store[0])
    monkeypatch.chdir(ABLATIONS.parents[1])
    page = tmp_path / "cli.html"
    assert main(["report", "--experiment", HOSTILE_EXPERIMENT, "--out", str(page)]) == 0
    assert "What matters" not in page.read_text()
    html = build_report(tmp_path / "r.html", [HOSTILE_EXPERIMENT], ablations=tmp_path / "none")
    assert "What matters" not in html.read_text()


def test_no_tuning_is_a_note(tmp_path, monkeypatch):
    dataset = load_dataset("synthetic:tiny,count=120")
    fit_tracked("lstm-columns", dataset, {**FAST, "epochs": 1}, log_model=False, progress=False)
    html = build_report(tmp_path / "r.html").read_text()
    assert "No tuning studies in these experiments" in html
    assert "only one approach: nothing to compare" in html
    assert section_numbers(html) == [*range(1, 9)]  # tuning (a note) and provenance follow
    # no suite: the page's own command rebuilds it
    assert f"<code>python -m bench report --out {tmp_path / 'r.html'}</code>" in html


# ------------------------------------------------------------------------------------ statistics


def test_mcnemar_exact_on_known_counts():
    # 10 vs 2 discordant: two-sided binomial p = 2 * P(X <= 2 | n=12, 1/2) = 2 * 79 / 4096
    assert mcnemar_exact(10, 2) == pytest.approx(2 * 79 / 4096)
    assert mcnemar_exact(2, 10) == pytest.approx(2 * 79 / 4096)
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(5, 5) == pytest.approx(1.0)


def test_holm_adjustment_on_known_values():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]


def test_pareto_front_and_epochs_to_threshold():
    cost = [1, 2, 3, 4, 2]
    value = [0.5, 0.8, 0.7, 0.9, 0.8]
    # (2, 0.8) appears twice: neither beats the other, both are on the front
    assert pareto_front(cost, value) == [0, 1, 4, 3]
    assert first_epoch_reaching([0.1, 0.92, 0.96], 0.9) == 2
    assert math.isnan(first_epoch_reaching([0.1, 0.2], 0.9))


def test_bootstrap_resamples_within_seeds():
    """Two seeds, one reading every image right, one none: the paired-difference bootstrap keeps
    each seed's images, so the pooled mean is exactly 1/2 every time (pooling the 200 images as
    independent would give an interval of about +-7%); the leaderboard's two-level bootstrap also
    draws the seeds, so the same two seeds span the whole range: their spread is the uncertainty."""
    groups = [np.ones(100), np.zeros(100)]
    assert bootstrap_mean(groups) == (0.5, 0.5, 0.5)
    assert bootstrap_ratio(groups) == (0.5, 0.0, 1.0)
    same = [np.r_[np.ones(50), np.zeros(50)]] * 2  # seeds that agree: only the images vary
    point, low, high = bootstrap_ratio(same)
    assert point == 0.5 and 0.38 < low < 0.45 and 0.55 < high < 0.62
    rng = np.random.default_rng(3)
    mixed = [rng.random(100) < 0.5, rng.random(100) < 0.5]
    point, low, high = bootstrap_ratio(mixed)
    assert low < point < high and point == pytest.approx(np.mean([m.mean() for m in mixed]))


def test_paired_test_bootstraps_images_within_seeds():
    """Seed 0: only the leader right, seed 1: only the other: within each seed the difference is
    constant, so the interval is a point; the discordant pairs are pooled for McNemar."""
    files = [f"{i}.png" for i in range(50)]

    def frame(correct: bool) -> pd.DataFrame:
        return pd.DataFrame({"file": files, "correct": correct})

    outcomes = {"L0": frame(True), "L1": frame(False), "O0": frame(False), "O1": frame(True)}
    runs = pd.DataFrame(
        {"tags.approach": ["lead", "lead", "other", "other"], "tags.seed": ["0", "1", "0", "1"]}
    ).assign(run_id=["L0", "L1", "O0", "O1"], **{"tags.fold": ""})
    comparison = SimpleNamespace(predictions=outcomes.__getitem__)
    (test,) = paired_tests(comparison, runs, "lead")
    assert (test["diff"], test["low"], test["high"]) == (0.0, 0.0, 0.0)
    assert test["items"] == 100 and test["leader_only"] == 50 and test["other_only"] == 50


def test_verdicts_leave_the_p_value_to_its_columns():
    """The verdict says what the Holm-adjusted p means, not the number again (at another
    precision than its column's)."""
    files = [f"{i}.png" for i in range(60)]
    outcomes = {  # lead reads every image, "other" none, "same" all but one
        "L": pd.DataFrame({"file": files, "correct": True}),
        "O": pd.DataFrame({"file": files, "correct": False}),
        "S": pd.DataFrame({"file": files, "correct": [i != 0 for i in range(60)]}),
    }
    runs = pd.DataFrame(
        {"tags.approach": ["lead", "other", "same"], "tags.seed": "0", "tags.fold": ""}
    ).assign(run_id=["L", "O", "S"])
    comparison = SimpleNamespace(predictions=outcomes.__getitem__)
    other, same = paired_tests(comparison, runs, "lead")
    assert other["significant"] and not same["significant"]
    assert other["verdict"] == "lead reads more images right than other: a real difference"
    assert same["verdict"] == (
        "no significant difference between lead and same: these runs cannot tell them apart"
    )


def test_best_marks_every_tie_and_no_training_time_under_an_equal_budget():
    """Every row tying the best is highlighted (equal accuracies; costs, times and speeds within
    1%); none where all rows tie, and no training time when all runs had the same budget."""
    table = pd.DataFrame(
        {
            "seq_acc": [0.9, 0.9, 0.5],
            "char_acc": [0.95, 0.97, 0.6],
            "cer": [0.02, 0.01, 0.3],
            "params": [1000.0, 1009.0, 2000.0],
            "flops": [1e6, 2e6, 3e6],
            "train_seconds": [330.0, 340.0, 400.0],
            "infer_img_per_s": [500.0, 496.0, 100.0],
            "latency_ms": [2.0, 2.0, 2.0],
            "epochs_90": [3.0, np.nan, 5.0],
            "epochs_95": np.nan,
            "time_50": [20.0, 20.1, 40.0],
            "time_90": [30.0, 60.0, 90.0],
        }
    )
    marks = best_marks(table)
    assert marks["seq_acc"] == [0, 1] and marks["char_acc"] == [1] and marks["cer"] == [1]
    assert marks["params"] == [0, 1] and marks["infer_img_per_s"] == [0, 1]
    assert marks["train_seconds"] == [0] and marks["time_50"] == [0, 1] and marks["flops"] == [0]
    assert marks["epochs_90"] == [0] and "latency_ms" not in marks and "epochs_95" not in marks
    assert "train_seconds" not in best_marks(table, equal_budget=True)
    assert best_marks(table.assign(train_seconds=[330.0, 331.0, 400.0]))["train_seconds"] == [0, 1]


def test_intervals_stay_inside_zero_and_one_and_the_worst_cer():
    nothing = [np.zeros(200), np.zeros(200)]
    point, low, high = bootstrap_ratio(nothing)
    assert (point, low) == (0.0, 0.0) and 0.0 < high < 0.01  # see the next test
    almost = [np.r_[1.0, np.zeros(199)], np.zeros(200)]  # 1 image of 400 read right
    point, low, high = bootstrap_ratio(almost)
    assert point == pytest.approx(1 / 400) and 0.0 <= low <= point <= high <= 1.0
    rng = np.random.default_rng(0)
    lengths = [np.full(300, 5.0), np.full(300, 5.0)]
    distances = [rng.integers(0, 11, 300).astype(float) for _ in lengths]  # CER up to 200%
    point, low, high = bootstrap_ratio(distances, lengths)
    worst = max(d.max() for d in distances) / 5
    assert 0.0 <= low < point < high <= worst and high > 0.9
    assert point == pytest.approx(np.mean([d.sum() / 1500 for d in distances]))


def test_an_all_right_or_all_wrong_test_set_gets_an_interval_of_nonzero_width():
    """0 of 187 read right is not a certain 0%: the bootstrap has nothing to resample there, so
    the interval is the pooled count's Wilson interval (0 of n: up to z^2 / (n + z^2)); likewise
    104 of 104, and a CER of 100% (every character wrong). Paired differences that are all zero
    (two identical readers) keep the bootstrap's point: a difference is no proportion."""
    z2 = 1.959964**2
    assert bootstrap_mean([np.zeros(187)], outcomes=True) == pytest.approx((0, 0, z2 / (187 + z2)))
    point, low, high = bootstrap_ratio([np.ones(104)])
    assert (point, high) == (1.0, 1.0) and low == pytest.approx(104 / (104 + z2))
    assert bootstrap_mean([np.ones(52), np.ones(52)], outcomes=True)[1] == pytest.approx(low)
    lengths = [np.full(100, 5.0)]
    point, low, high = bootstrap_ratio(lengths, lengths)  # edit distance = length everywhere
    assert (point, high) == (1.0, 1.0) and low == pytest.approx(500 / (500 + z2))
    assert bootstrap_mean([np.zeros(50)]) == (0.0, 0.0, 0.0)  # differences: no bound to keep off
    mixed = [np.r_[1.0, np.zeros(99)]]  # one right: the bootstrap as before
    assert bootstrap_mean(mixed, outcomes=True) == bootstrap_mean(mixed)


def test_time_to_threshold_and_training_seconds():
    assert first_time_reaching([0.2, 0.6, 0.95], [10.0, 20.0, 30.0], 0.5) == 20.0
    assert math.isnan(first_time_reaching([0.2, 0.4], [10.0, 20.0], 0.5))
    logged = pd.DataFrame({"elapsed_seconds": [9.0, 19.0], "epoch_seconds": [12.0, 12.0]})
    assert training_seconds(logged).tolist() == [9.0, 19.0]
    older = pd.DataFrame({"elapsed_seconds": [np.nan, np.nan], "epoch_seconds": [12.0, 11.0]})
    assert training_seconds(older).tolist() == [12.0, 23.0]
    assert training_seconds(older.drop(columns="epoch_seconds").assign(x=1)).isna().all()


def test_budget_and_machine_are_stated():
    def runs(budgets, epochs=("30", "30")) -> pd.DataFrame:
        return pd.DataFrame(
            {
                "tags.approach": ["a", "b"],
                "params.budget": budgets,
                "params.epochs": list(epochs),
                "params.cpu": "Test CPU",
                "params.torch_threads": "2",
                "params.device": "cpu",
            }
        )

    same = training_setup(runs(["240.0", "240.0"]))
    assert same["budget"].startswith("equal budget: 4 min of training per run")
    assert same["equal_time"] and same["machines"] == ["Test CPU, 2 torch threads, device cpu"]
    none = training_setup(runs(["0.0", None], epochs=("30", "2")))
    assert none["budget"] == "no time budget: 30 epochs: a; 2 epochs: b"
    assert not none["equal_time"]
    assert "differ" in training_setup(runs(["240.0", "90"]))["budget"]
    assert training_setup(runs([None, None]).drop(columns="params.budget"))["budget"] == (
        "no time budget: 30 epochs per run"
    )


def test_rebuild_commands():
    shared = pd.DataFrame({"tags.suite": ["quick", "quick"]})
    built = ["report", "--suite", "quick", "--out", "reports/quick/index.html"]
    assert rebuild_commands(shared, built) == [
        "python -m bench run --suite quick",
        "python -m bench report --suite quick --out reports/quick/index.html",
    ]
    built = [*built[:3], "--ablations", "reports/ablations", *built[3:]]
    assert rebuild_commands(shared, built) == [
        "python -m bench run --suite quick --ablations reports/ablations",
        "python -m bench report --suite quick --ablations reports/ablations --out "
        "reports/quick/index.html",
    ]
    mixed = pd.DataFrame({"tags.suite": ["quick", ""]})
    built = ["report", "--experiment", "a b", "--out", "x.html"]
    assert rebuild_commands(mixed, built) == [
        "python -m bench report --experiment 'a b' --out x.html"
    ]


# ----------------------------------------------------------------------- a store without training

LABELS = [f"{i:02d}a{i % 7}" for i in range(60)]


def log_run(approach: str, seed: int, preds: list[str], val_acc: list[float], elapsed: bool):
    """A finished final run as training logs it, without training: params, per-epoch metrics
    (with ``elapsed_seconds``, or only ``epoch_seconds`` like older runs), test metrics and
    ``predictions.csv``."""
    mlflow.set_experiment("fake")
    with mlflow.start_run():
        mlflow.set_tags({"approach": approach, "dataset": "fake:ds", "seed": seed, "suite": "fk"})
        mlflow.log_params(
            {
                "budget": "240.0",
                "epochs": "30",
                "cpu": "Test CPU",
                "torch_threads": "2",
                "device": "cpu",
                "git_commit": "abc123",
                "data.charset": "0123456789a",
                "data.n_test": str(len(LABELS)),
            }
        )
        summary = metrics.summarize(preds, LABELS)
        log_metrics({f"test_{k}": v for k, v in summary.items()})
        log_metrics({"params": 1e3 * len(approach), "flops": 1e6, "train_seconds": 240.0 + seed})
        for step, acc in enumerate(val_acc, start=1):
            timing = {"epoch_seconds": 12.0 + seed} | (
                {"elapsed_seconds": 10.0 * step + seed} if elapsed else {}
            )
            log_metrics({"val_seq_acc": acc, "val_loss": 1 / step, **timing}, step=step)
        log_metrics({"epochs_run": len(val_acc)})
        rows = pd.DataFrame({"file": [f"{t}.png" for t in LABELS], "label": LABELS})
        rows["prediction"] = preds
        rows["correct"] = rows.prediction == rows.label
        rows["cer"] = [metrics.cer([p], [t]) for p, t in zip(preds, LABELS, strict=True)]
        mlflow.log_text(rows.to_csv(index=False), "predictions.csv")


@pytest.fixture
def fake_report(tmp_path, mlflow_store) -> tuple[str, Path]:
    """crnn reads most images and logs elapsed_seconds; an approach unknown to the registry
    reads none (CER above 100%) and logs only epoch_seconds; one failed run."""
    mlflow.set_tracking_uri(mlflow_store)
    for seed in (0, 1):
        good = [t if i % 10 else t[:-1] + "x" for i, t in enumerate(LABELS)]
        log_run("crnn", seed, good, [0.3, 0.6, 0.95], elapsed=True)
        bad = ["zz" * (1 + i % 3) + "q" for i in range(len(LABELS))]
        log_run("zero-net", seed, bad, [0.0, 0.55], elapsed=False)
    with mlflow.start_run():
        mlflow.set_tags({"approach": "crnn", "seed": 2, "suite": "fk", "error": "boom"})
        mlflow.end_run("FAILED")
    with mlflow.start_run():  # seed 1 failed once, then trained again to the end (above)
        tags = {"approach": "crnn", "dataset": "fake:ds", "seed": 1, "suite": "fk"}
        mlflow.set_tags({**tags, "error": "worker died"})
        mlflow.end_run("FAILED")
    out = tmp_path / "page" / "index.html"
    return build_report(out, experiments=["fake"]).read_text(), out


def test_report_states_budget_machine_times_and_commands(fake_report):
    html, _ = fake_report
    assert "equal budget: 4 min of training per run (at most 30 epochs per run)" in html
    assert "Test CPU, 2 torch threads, device cpu" in html and "hold for that machine" in html
    assert "<code>python -m bench run --suite fk</code>" in html
    assert "<code>abc123</code>" in html
    # per epoch 10, 20, 30 s (+ the seed): 50% at 20.5 s on average, 90% at 30.5 s
    assert section_numbers(html) == [*range(1, 7), 7, 8, 9]  # tuning, failed runs, provenance
    assert "Failed or interrupted runs" in html and "boom" in html
    failed = html[html.index("Failed or interrupted runs") :]
    assert failed.count("redone: finished as") == 1 and "not redone" in failed  # seed 1, seed 2


def test_numbers_stay_on_one_line_and_an_equal_budget_has_no_best_time(fake_report):
    """Numeric cells do not wrap ("1.55e-" / "120"); both approaches trained 240 s and 241 s
    under a 240 s budget: no training time is marked best."""
    html, _ = fake_report
    assert re.search(r"td:not\(\.name\) \{ white-space: nowrap; \}", html)
    table = html[html.index("Leaderboard</h3>") : html.index("Which differences are real")]
    assert re.findall(r'<td class="(\w*)">240</td>', table) == ["", ""]
    assert "none for\nthe training time: every run had the same time budget" in table


def test_leaderboard_csv_holds_the_table(fake_report):
    html, out = fake_report
    csv = pd.read_csv(out.parent / "leaderboard.csv")
    assert list(csv.columns) == ["suite", *CSV_COLUMNS]
    csv = csv.set_index("approach")
    assert (csv.dataset == "fake:ds").all() and list(csv.index) == ["crnn", "zero-net"]
    assert (csv.images == len(LABELS)).all()  # one split: its test part's distinct images
    crnn, zero = csv.loc["crnn"], csv.loc["zero-net"]
    assert crnn.seq_acc == pytest.approx(0.9) and crnn.n == 2
    assert crnn.time_50 == pytest.approx(20.5) and crnn.time_90 == pytest.approx(30.5)
    assert crnn.time_reached_90 == 2 and crnn.reached_95 == 2 and crnn.epochs_95 == 3
    # epoch_seconds summed: 50% in epoch 2 after 2 x 12 s (seed 0) and 2 x 13 s (seed 1)
    assert zero.time_50 == pytest.approx(25.0) and zero.time_reached_90 == 0
    z2, images = 1.959964**2, 2 * len(LABELS)  # none of 2 seeds' images: Wilson, not 0 to 0
    assert (zero.seq_acc, zero.seq_acc_low) == (0.0, 0.0)
    assert zero.seq_acc_high == pytest.approx(z2 / (images + z2), rel=1e-4)
    bad = ["zz" * (1 + i % 3) + "q" for i in range(len(LABELS))]  # zero-net's predictions
    worst = max(metrics.cer([p], [t]) for p, t in zip(bad, LABELS, strict=True))
    assert 1.0 < zero.cer_low <= zero.cer <= zero.cer_high <= worst  # CER above 100%, bounded
    for row in csv.reset_index().to_dict("records"):  # the page shows the same numbers
        for col in ("seq_acc", "char_acc", "cer"):
            shown = f'{row[col]:.2%}<br><span class="ci">'
            shown += f"{row[col + '_low']:.2%}–{row[col + '_high']:.2%}</span>"
            assert shown in html
    assert "±" not in html


def test_what_matters_intervals_draw_seeds_then_images(fake_report, tmp_path):
    """The ablations' accuracy intervals are the leaderboard's two-level bootstrap and the page
    says so: crnn-alphabet's 20-class seeds (4.3%, 17.8%, 75.5%) span most of theirs."""
    html = build_report(tmp_path / "w.html", ["fake"], ablations=ABLATIONS).read_text()
    section = html[html.index('id="what-matters"') :]
    assert (
        "two-level bootstrap: the seeds drawn with replacement, then each drawn seed's" in section
    )
    assert "resample test images within seeds" not in section
    row = pd.read_csv(ABLATIONS / "crnn-alphabet" / "ablation.csv").iloc[0]
    assert row.acc_low < 0.1 and row.acc_high > 0.6
    assert f'32.53% <span class="ci">({row.acc_low:.2%}–{row.acc_high:.2%})</span>' in section


def test_glossary_explains_the_terms_near_the_top(fake_report):
    html, _ = fake_report
    assert html.index('<details id="glossary">') < html.index('<section id="ds-1">')
    glossary = html[html.index('<details id="glossary">') :]
    glossary = glossary[: glossary.index("</details>")]
    for term in (
        "CER",
        "CTC",
        "McNemar test, Holm adjustment",
        "Pareto front",
        "Two-level bootstrap interval",
    ):
        assert f"<dt>{term}</dt><dd>" in glossary


def log_study(name: str, storage: str, trials: int) -> None:
    """A tuning study as ``bench tune`` tracks it (a study run and one run per trial), its
    trials run in Optuna without training."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(study_name=name, storage=storage, load_if_exists=True)
    study.optimize(
        lambda t: (
            t.suggest_float("lr", 1e-4, 1e-2, log=True) + t.suggest_int("hidden", 8, 64) / 1e3
        ),
        n_trials=trials,
    )
    mlflow.set_experiment("fake")
    with mlflow.start_run():
        mlflow.set_tags({"kind": "study", "optuna_study": name, "approach": "crnn", "suite": "fk"})
        mlflow.log_params({"trials": len(study.trials), "storage": storage})
    for trial in study.trials:
        with mlflow.start_run():
            mlflow.set_tags(
                {"optuna_study": name, "trial": trial.number, "trial_state": "complete"}
            )
            log_metrics({"val_cer": trial.value})


def test_importances_from_few_trials_carry_a_caveat(fake_report, tmp_path):
    """Under 10 complete trials the importances are shown with a caveat; from 10 on, without."""
    storage = f"sqlite:///{tmp_path / 'optuna.db'}"
    log_study("few", storage, 4)
    log_study("enough", storage, 10)
    html = build_report(tmp_path / "t.html", ["fake"]).read_text()
    start = html.index('<section id="tuning">')
    tuning = html[start : html.index("</section>", start)]
    studies = {part.split("</h3>")[0]: part for part in tuning.split("<h3>")[1:]}
    caveat = "Importances computed from 4 complete trials: with fewer than 10, they are a rough"
    for name, shown in (("few", True), ("enough", False)):
        assert studies[name].count("<svg") == 2 and "unavailable" not in studies[name]
        assert (caveat in studies[name]) == shown, name


def registry_names(n: int) -> list[str]:
    return list(style.registry_order()[:n])


def legend_colours(ax) -> dict[str, str]:
    legend = ax.get_legend()
    colours = {}
    for handle, text in zip(legend.legend_handles, legend.get_texts(), strict=True):
        if isinstance(handle, matplotlib.lines.Line2D):
            marker = handle.get_marker() not in (None, "None")
            colour = handle.get_markerfacecolor() if marker else handle.get_color()
        else:
            colour = handle.get_facecolor()
        colours[text.get_text()] = to_hex(colour)
    return colours


def test_an_approach_keeps_its_colour_in_every_figure():
    everyone = [*registry_names(4), "not-registered"]
    subset = [everyone[2], "not-registered"]

    def curves(names):
        return pd.DataFrame(
            [
                {"approach": a, "seed": s, "epoch": e, "val_seq_acc": 0.1 * e, "val_loss": 1 / e}
                for a in names
                for s in (0, 1)
                for e in (1, 2, 3)
            ]
        ).assign(elapsed=lambda f: 10.0 * f.epoch + f.seed)

    def table(names):
        return pd.DataFrame(
            {"approach": names, "seq_acc": 0.5, "seq_acc_low": 0.4, "seq_acc_high": 0.6}
        ).assign(params=[10.0**i for i in range(len(names))], flops=1e6, train_seconds=60.0)

    def slices(names):
        return pd.DataFrame(
            [{"approach": a, "slice": k, "seq_acc": 0.5} for a in names for k in ("x", "y")]
        )

    builders = {
        "learning": lambda n: figures.learning_curves_figure(curves(n)).axes[1],
        "time": lambda n: figures.time_curves_figure(figures.time_bands(curves(n))).axes[0],
        "cost": lambda n: next(  # the legend sits beside the last panel that has points
            a for a in figures.cost_scatter_figure(table(n)).axes if a.get_legend()
        ),
        "slices": lambda n: figures.slice_bars_figure(slices(n)).axes[0],
    }
    for name, build in builders.items():
        full, part = legend_colours(build(everyone)), legend_colours(build(subset))
        for approach in subset:
            assert part[approach] == full[approach] == style.approach_colour(approach), name
        assert len({full[a] for a in everyone}) == len(everyone), name
    assert style.approach_colour(everyone[0]) == to_hex(matplotlib.colormaps["tab10"](0))
    # equal FLOPs and an equal time budget: those panels are one line each, not a column of dots
    _, flops, seconds = figures.cost_scatter_figure(table(everyone)).axes
    for ax, text in ((flops, "FLOPs per image: 1,000,000"), (seconds, "training time (s): 60")):
        assert not ax.axison and ax.texts[0].get_text() == f"{text}\nfor every approach"


def test_axes_in_percent_integers_and_readable_logs():
    frame = pd.DataFrame(
        [
            {"approach": "a", "seed": 0, "epoch": e, "val_seq_acc": 0.3 * e, "val_loss": 2.0 / e}
            for e in (1, 2, 3)
        ]
    )
    acc, loss = figures.learning_curves_figure(frame).axes
    assert isinstance(acc.yaxis.get_major_formatter(), PercentFormatter)
    assert isinstance(acc.xaxis.get_major_locator(), MaxNLocator)
    assert all(float(t).is_integer() for t in acc.get_xticks())
    assert loss.get_yscale() == "log"
    trials = pd.DataFrame(
        {"trial": [0, 1, 2, 3], "state": ["complete", "pruned", "complete", "complete"]}
    ).assign(value=[0.5, 0.6, 0.3, 0.4])
    ax = figures.optimization_history_figure(trials).axes[0]
    assert isinstance(ax.yaxis.get_major_formatter(), PercentFormatter)
    assert all(float(t).is_integer() for t in ax.get_xticks())
    best = next(line for line in ax.get_lines() if line.get_label() == "best so far")
    assert list(best.get_ydata()) == [0.5, 0.3, 0.3]  # a running minimum of the CER
    # log axes: a few plain labels, none overlapping
    assert style.log_ticks(1e3, 1e9) == [1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9][::2]
    assert style.log_ticks(0.05, 3.5) == [0.05, 0.1, 0.2, 0.5, 1.0, 2.0]
    assert len(style.log_ticks(0.31, 0.38)) >= 2
    table = pd.DataFrame(
        {
            "approach": ["p", "q", "r", "s"],
            "seq_acc": [0.2, 0.5, 0.7, 0.9],
            "params": [1.2e3, 4e4, 3e6, 8e8],
            "flops": [2e5, 3e6, 4e8, 5e10],
            "train_seconds": [30.0, 45.0, 60.0, 80.0],
        }
    )
    figure = figures.cost_scatter_figure(table)
    figure.canvas.draw()
    for ax in figure.axes:
        labels = [t for t in ax.get_xticklabels() if t.get_visible() and t.get_text()]
        texts = [t.get_text() for t in labels]
        assert 2 <= len(labels) <= 6, texts
        boxes = sorted((t.get_window_extent() for t in labels), key=lambda b: b.x0)
        assert all(a.x1 < b.x0 for a, b in itertools.pairwise(boxes)), texts


def test_accuracy_axes_stay_inside_zero_and_one_hundred_percent():
    """An approach at 0% (its interval and band down to 0%) and one at 100% leave no margin
    below 0% or above 100% on any accuracy axis."""
    curves = pd.DataFrame(
        [
            {"approach": a, "seed": s, "epoch": e, "val_seq_acc": v, "val_loss": 1 / e}
            for a, values in (("a", (0.0, 0.0, 0.0)), ("b", (0.5, 1.0, 1.0)))
            for s in (0, 1)
            for e, v in enumerate(values, start=1)
        ]
    ).assign(elapsed=lambda f: 10.0 * f.epoch + f.seed)
    table = pd.DataFrame(
        {
            "approach": ["a", "b"],
            "seq_acc": [0.0, 1.0],
            "seq_acc_low": [0.0, 0.97],
            "seq_acc_high": [0.03, 1.0],
            "params": [1e3, 1e5],
            "flops": [1e6, 1e8],
            "train_seconds": [60.0, 90.0],
        }
    )
    slices = pd.DataFrame(
        [
            {"approach": a, "slice": k, "seq_acc": v}
            for a, v in (("a", 0.0), ("b", 1.0))
            for k in "xy"
        ]
    )
    axes = [
        figures.learning_curves_figure(curves).axes[0],
        figures.time_curves_figure(figures.time_bands(curves)).axes[0],
        figures.cost_scatter_figure(table).axes[0],
        figures.slice_bars_figure(slices).axes[0],
    ]
    for ax in axes:
        low, high = ax.get_ylim()
        assert low == 0 and 0 < high <= 1, ax.get_ylabel()


def test_nothing_read_right_is_a_note_not_an_empty_plot(tmp_path, mlflow_store):
    """Where every plotted accuracy is 0, the accuracy figures say so in one line (the learning
    curves keep their loss panel beside it)."""
    mlflow.set_tracking_uri(mlflow_store)
    bad = ["zz" * (1 + i % 3) + "q" for i in range(len(LABELS))]
    for approach in ("crnn", "zero-net"):
        log_run(approach, 0, bad, [0.0, 0.0, 0.0], elapsed=True)
    html = build_report(tmp_path / "r.html", experiments=["fake"]).read_text()
    assert html.count(f'<p class="note">{figures.NOTHING_READ}</p>') == 3  # cost, time, slices
    curves = pd.DataFrame(
        {"approach": "a", "seed": 0, "epoch": [1, 2], "val_seq_acc": 0.0, "val_loss": [2.0, 1.0]}
    )
    acc, loss = figures.learning_curves_figure(curves).axes
    assert not acc.axison and acc.texts[0].get_text() == figures.NOTHING_READ
    assert loss.axison and loss.get_lines()
    assert figures.read_nothing(pd.Series([0.0, np.nan])) and not figures.read_nothing(
        pd.Series([0.0, 0.01])
    )


# --------------------------------------------------------------------------------- in a browser


def test_page_opens_in_headless_chromium_without_console_errors(report, store, tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("chromium is not installed (Debian package 'chromium'; CI installs it)")
    _, root = store
    page = root / "report" / "index.html"
    shot = tmp_path / "screenshot.png"
    done = subprocess.run(
        [
            chromium,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--v=0",
            f"--screenshot={shot}",
            "--window-size=1280,2400",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.exists() and shot.stat().st_size > 10_000
    console = [line for line in done.stderr.splitlines() if "CONSOLE" in line]
    assert not [line for line in console if "ERROR" in line or "Uncaught" in line], console
    assert "Failed to load resource" not in done.stderr


def test_data_efficiency_section_from_a_curve_folder(fake_report, tmp_path):
    """`--curves DIR` adds the section: the figure, the images needed (or "not reached") and
    every point; the page's rebuild commands carry the folder; no section without it."""
    from bench.report.provenance import rebuild_commands

    folder = tmp_path / "curves"
    folder.mkdir()
    nan = float("nan")
    pretrained = "run:" + "a" * 32
    points = pd.DataFrame(
        {
            "approach": ["crnn", "crnn", "ce-crnn", "ce-crnn", "ce-crnn", "ce-crnn", "ce-crnn"],
            "start": ["scratch"] * 4 + [pretrained] * 3,
            "train_images": [50, 728, 50, 728, 0, 50, 728],
            "runs": [2, 2, 2, 2, 1, 2, 2],
            "seeds": ["0 1"] * 4 + ["0", "0 1", "0 1"],
            "epochs": [240.0, 40.0, 345.0, 30.0, 0.0, 345.0, 30.0],
            "steps": [240.0, 240.0, 1380.0, 1380.0, 0.0, 1380.0, 1380.0],
            "test_seq_acc": [0.2, 0.93, 0.5, 0.97, 0.41, 0.96, 0.99],
            "test_seq_acc_low": [0.15, 0.9, 0.45, 0.95, 0.35, 0.94, 0.98],
            "test_seq_acc_high": [0.25, 0.95, 0.55, 0.98, 0.47, 0.97, 1.0],
            "test_cer": [0.4, 0.02, 0.2, 0.01, 0.2, 0.01, 0.002],
            "images_for_90%": [728.0, 728.0, 728.0, 728.0, 50.0, 50.0, 50.0],
            "images_for_95%": [nan, nan, 728.0, 728.0, 50.0, 50.0, 50.0],
        }
    )
    points.to_csv(folder / "curve.csv", index=False)
    page = build_report(tmp_path / "c.html", ["fake"], curves=folder).read_text()
    section = page[page.index('<section id="data-efficiency">') :]
    section = section[: section.index("</section>")]
    assert "Data efficiency" in section and "<svg" in section
    assert section.count("not reached") == 1  # crnn never reaches 95%
    assert "93.00%" in section and "1380" in section
    needed = section[section.index("zero-shot (no real label)") :]
    needed = needed[: needed.index("</table>")]
    # one row per approach and start; the zero-shot accuracy on the pretrained row only
    assert needed.count("<tr>") == 3 and "41.00%" in needed and pretrained in needed
    assert "ce-crnn, pretrained" in section  # the dashed line's legend entry
    assert '<a href="#data-efficiency">' in page
    assert "--curves" in " ".join(
        rebuild_commands(pd.DataFrame(), ["report", "--curves", "c", "--out", "x"])
    )
    assert "data-efficiency" not in build_report(tmp_path / "n.html", ["fake"]).read_text()
