import math
import re
import shutil
import subprocess
from pathlib import Path

import mlflow
import numpy as np
import pytest
from scipy import stats as scipy_stats

from bench.data import load_dataset
from bench.report import ReportError, build_report, load_comparison
from bench.report.build import leaderboard, paired_tests
from bench.report.stats import (
    first_epoch_reaching,
    holm,
    mcnemar_exact,
    mean_ci,
    paired_bootstrap_diff,
    pareto_front,
)
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
                approach="lstm-columns",
                dataset="synthetic:tiny,count=200",
                trials=3,
                storage=f"sqlite:///{root / 'optuna.db'}",
                suite="unit",
                pruner="none",
                experiment=HOSTILE_EXPERIMENT,
                overrides={**FAST, "epochs": 1},
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


def test_every_section_is_present(report):
    for heading in (
        "1. Leaderboard",
        "2. Which differences are real",
        "3. Accuracy against cost",
        "4. Learning curves",
        "5. Tuning",
        "6. Error analysis",
        "7. Provenance",
        "8. What matters: ablations",
    ):
        assert heading in report
    assert report.count("<svg") >= 6
    assert "data:image/png;base64," in report  # the misread gallery, embedded
    assert "Every approach had the same tuning budget: 3 trials of 1 epoch," in report


def test_what_matters_shows_the_checked_in_ablations(report):
    """The alphabet ablation (crnn, 3 seeds): its rows, paired difference and exact test."""
    section = report[report.index('id="what-matters"') :]
    assert "crnn-alphabet" in section and "99.04%" in section and "32.53%" in section
    assert "+66.51% (+63.62% to +69.23%)" in section and "415 / 0" in section
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
        values = [client.get_run(i).data.metrics["test_seq_acc"] for i in ids]
        assert table.loc[approach, "n"] == 2
        assert table.loc[approach, "seq_acc"] == pytest.approx(np.mean(values))
        assert table.loc[approach, "seq_acc_half"] == pytest.approx(mean_ci(values).half_width)
    tests = paired_tests(comparison, runs, table.index[0])
    assert len(tests) == 1 and tests[0]["seeds"] == 2 and tests[0]["items"] == 2 * 40


def test_missing_pieces_become_notes_and_bad_experiments_errors(store, monkeypatch, tmp_path):
    uri, _ = store
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    html = build_report(tmp_path / "r.html", experiments=[HOSTILE_EXPERIMENT]).read_text()
    assert "single seed: no confidence interval" in html  # the hostile dataset has one run
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
    monkeypatch.setenv("MLFLOW_TRACKING_URI", store[0])
    for folder in (None, tmp_path / "none"):
        html = build_report(tmp_path / "r.html", [HOSTILE_EXPERIMENT], ablations=folder)
        assert "What matters" not in html.read_text()


def test_no_tuning_is_a_note(tmp_path, monkeypatch):
    dataset = load_dataset("synthetic:tiny,count=120")
    fit_tracked("lstm-columns", dataset, {**FAST, "epochs": 1}, log_model=False, progress=False)
    html = build_report(tmp_path / "r.html").read_text()
    assert "No tuning studies in these experiments" in html
    assert "only one approach: nothing to compare" in html


# ------------------------------------------------------------------------------------ statistics


def test_mean_ci_is_the_student_t_interval():
    ci = mean_ci([0.90, 0.92, 0.97])
    sd = np.std([0.90, 0.92, 0.97], ddof=1)
    half = scipy_stats.t.ppf(0.975, 2) * sd / math.sqrt(3)
    assert ci.mean == pytest.approx(0.93) and ci.half_width == pytest.approx(half)
    assert ci.n == 3 and math.isnan(mean_ci([0.5]).half_width) and mean_ci([]).n == 0


def test_mcnemar_exact_on_known_counts():
    # 10 vs 2 discordant: two-sided binomial p = 2 * P(X <= 2 | n=12, 1/2) = 2 * 79 / 4096
    assert mcnemar_exact(10, 2) == pytest.approx(2 * 79 / 4096)
    assert mcnemar_exact(2, 10) == pytest.approx(2 * 79 / 4096)
    assert mcnemar_exact(0, 0) == 1.0 and mcnemar_exact(5, 5) == pytest.approx(1.0)


def test_holm_adjustment_on_known_values():
    assert holm([0.01, 0.04, 0.03]) == pytest.approx([0.03, 0.06, 0.06])
    assert holm([0.5]) == [0.5]


def test_paired_bootstrap_interval_contains_the_difference():
    rng = np.random.default_rng(1)
    a = rng.random(400) < 0.9
    b = rng.random(400) < 0.7
    diff, low, high = paired_bootstrap_diff(a, b)
    assert diff == pytest.approx(a.mean() - b.mean())
    assert low < diff < high and low > 0
    same = paired_bootstrap_diff(a, a)
    assert same == (0.0, 0.0, 0.0)


def test_pareto_front_and_epochs_to_threshold():
    cost = [1, 2, 3, 4, 2]
    value = [0.5, 0.8, 0.7, 0.9, 0.8]
    # (2, 0.8) appears twice: neither beats the other, both are on the front
    assert pareto_front(cost, value) == [0, 1, 4, 3]
    assert first_epoch_reaching([0.1, 0.92, 0.96], 0.9) == 2
    assert math.isnan(first_epoch_reaching([0.1, 0.2], 0.9))


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
