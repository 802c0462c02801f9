import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bench.approaches import list_approaches
from bench.cli import main, parse_assignments


def test_help_runs_as_a_module():
    out = subprocess.run(
        [sys.executable, "-m", "bench", "--help"], capture_output=True, text=True, check=True
    ).stdout
    for command in ("list", "train", "compare"):
        assert command in out


def test_list_shows_every_approach_with_its_seed_and_codec(capsys):
    assert main(["list"]) == 0
    out = capsys.readouterr().out
    for name in list_approaches():
        assert name in out
    line = next(row for row in out.splitlines() if row.startswith("crnn-resnet "))
    assert "000" in line and "ctc" in line and "3x50x200" in line and "9.6M" in line
    assert max(map(len, out.splitlines())) <= 100  # fits a terminal


def test_train_prints_metrics_and_writes_a_result(tmp_path, capsys):
    out_file = tmp_path / "result.json"
    code = main(
        [
            "train",
            "--approach",
            "lstm-columns",
            "--dataset",
            "synthetic:tiny,count=120",
            "--epochs",
            "1",
            "--set",
            "height=32",
            "--set",
            "width=96",
            "--set",
            "hidden=16",
            "--quiet",
            "--out",
            str(out_file),
        ]
    )
    assert code == 0
    out = capsys.readouterr().out
    assert "test_seq_acc" in out and "test_cer" in out and "flops" in out
    assert "lstm-columns seed 0 synthetic:tiny,count=120 epoch 1/1: train loss " in out  # per epoch
    record = json.loads(out_file.read_text())
    assert record["approach"] == "lstm-columns" and record["hparams"]["hidden"] == 16
    assert len(record["history"]) == 1 and record["data"]["n_test"] == 24


@pytest.mark.parametrize(
    "argv, message",
    [
        (["train", "--approach", "nope"], "unknown approach 'nope'"),
        (["train", "--approach", "crnn", "--dataset", "folder:/does/not/exist"], "not a folder"),
        (
            [
                "train",
                "--approach",
                "crnn",
                "--dataset",
                "synthetic:tiny,count=50",
                "--set",
                "nope=1",
            ],
            "crnn has no hyperparameter nope",
        ),
        (
            ["train", "--approach", "crnn", "--dataset", "synthetic:tiny,count=50", "--set", "lr"],
            "--set expects key=value",
        ),
        (["predict", "--model", "nope", "missing.png"], "missing.png: no such file"),
    ],
)
def test_user_errors_are_one_line_messages(argv, message, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_assignments_are_read_as_yaml():
    assert parse_assignments(["a=1", "b=0.5", "c=true", "d=[1, 2]", "e=adam"]) == {
        "a": 1,
        "b": 0.5,
        "c": True,
        "d": [1, 2],
        "e": "adam",
    }


def test_compare_tracks_tables_reports_and_resumes(tmp_path, mlflow_store, capsys):
    import mlflow

    argv = [
        "compare",
        "--approach",
        "lstm-columns",
        "--dataset",
        "synthetic:tiny,count=120",
        "--seeds",
        "0",
        "1",
        "--epochs",
        "1",
        "--set",
        "height=32",
        "--set",
        "width=96",
        "--set",
        "hidden=8",
        "--experiment",
        "cmp",
        "--out",
        str(tmp_path / "out"),
        "--report",
        "--quiet",
    ]
    assert main(argv) == 0
    table = (tmp_path / "out" / "results.csv").read_text().splitlines()
    assert len(table) == 3 and table[0].startswith("approach,source,split,n_train,precision,seed")
    assert "2. Which differences are real" in (tmp_path / "out" / "index.html").read_text()
    client = mlflow.MlflowClient(mlflow_store)
    experiment = client.get_experiment_by_name("cmp").experiment_id
    assert len(client.search_runs([experiment])) == 2
    assert main(argv) == 0  # everything is done: nothing is trained again
    assert len(client.search_runs([experiment])) == 2
    capsys.readouterr()

    def changed(flag: str, value: str) -> list[str]:
        at = argv.index(flag) + 1
        return [*argv[:at], value, *argv[at + 1 :]]

    assert main(changed("--epochs", "2")) == 2  # a kept result of other settings: refused
    err = capsys.readouterr().err
    assert "lstm-columns-synthetic-tiny-count-120-seed0.json holds a result of other" in err
    assert "(epochs: kept 1, asked 2)" in err
    assert main(changed("--dataset", "synthetic:tiny,count=100")) == 0
    table = pd.read_csv(tmp_path / "out" / "results.csv")  # another dataset: rows of its own
    assert (
        sorted(table.dataset) == ["synthetic:tiny,count=100"] * 2 + ["synthetic:tiny,count=120"] * 2
    )


def no_runs(mlflow_store: str) -> bool:
    import mlflow

    client = mlflow.MlflowClient(mlflow_store)
    return not client.search_runs([e.experiment_id for e in client.search_experiments()])


@pytest.mark.parametrize(
    "extra, message",
    [
        (["--set", "epochs=-1"], "epochs=-1 is out of range: use >= 1"),
        (["--set", "batch_size=0"], "batch_size=0 is out of range: use >= 1"),
        (["--set", "optimizer=nope"], "optimizer='nope' is out of range"),
        (["--set", "dropout=1.5"], "dropout=1.5 is out of range"),
        (["--device", "cuda"], "torch sees no CUDA device"),
    ],
)
def test_bad_settings_stop_before_any_training_or_mlflow_run(
    extra, message, capsys, mlflow_store, monkeypatch
):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    argv = ["train", "--approach", "lstm-columns", "--dataset", "synthetic:tiny,count=50"]
    assert main([*argv, *extra]) == 2
    assert message in capsys.readouterr().err
    assert no_runs(mlflow_store)


def test_cache_shows_and_prunes_stale_checkpoints(tmp_path, capsys, monkeypatch):
    import bench.spec as spec_module

    monkeypatch.setenv("BENCH_CACHE_DIR", str(tmp_path / "cache"))
    folder = tmp_path / "cache" / "checkpoints"
    folder.mkdir(parents=True)
    current = spec_module.code_digest("crnn")
    (folder / f"crnn-{current}-0123456789abcdef0123.pt").write_bytes(b"x" * 2048)
    (folder / "crnn-000000000000-0123456789abcdef0123.pt").write_bytes(b"x" * 1024)
    (folder / "gone-000000000000-0123456789abcdef0123.pt").write_bytes(b"x")
    assert main(["cache"]) == 0
    out = capsys.readouterr().out
    assert "checkpoints" in out and "2 stale" in out
    assert main(["cache", "prune"]) == 0
    assert "removed 2 entries" in capsys.readouterr().out
    assert [p.name for p in folder.iterdir()] == [f"crnn-{current}-0123456789abcdef0123.pt"]


def ablate_argv(vary: str, out, seeds=("0",), epochs=1, sets=("hidden=8",)) -> list[str]:
    """``bench ablate`` of lstm-columns on a tiny synthetic set (``argv[4]`` is the variation)."""
    sets = ("height=32", "width=96", *sets)
    return [
        *("ablate", "--approach", "lstm-columns", "--vary", vary),
        *("--dataset", "synthetic:tiny,count=120", "--seeds", *seeds, "--epochs", str(epochs)),
        *(arg for value in sets for arg in ("--set", value)),
        *("--out", str(out), "--quiet"),
    ]


def test_ablate_pairs_variants_on_the_same_split_and_seeds(tmp_path, capsys):
    out = tmp_path / "ablation"
    argv = ablate_argv("lr=0.0001,0.01", out, ("0", "1"), 2, ("hidden=16", "optimizer=adam"))
    assert main(argv) == 0
    assert "| lr | seeds | test seq acc (95% CI) | per seed |" in capsys.readouterr().out
    table = pd.read_csv(out / "ablation.csv")
    assert list(table.lr) == [0.0001, 0.01] and list(table.seeds) == [2, 2]
    assert table.acc_diff[0] == 0 and pd.isna(table.p[0])
    assert 0 <= table.acc_low.min() <= table.acc_high.max() <= 1
    records = [json.loads(p.read_text()) for p in sorted(out.glob("lr=*/*.json"))]
    assert len(records) == 4 and {r["data"]["split_digest"] for r in records} == {
        records[0]["data"]["split_digest"]
    }
    assert main(argv) == 0  # a re-run reuses the four results
    assert "seed" not in capsys.readouterr().out.split("| lr |")[0]
    assert main([*argv[:4], "lr=0.1", *argv[5:]]) == 2
    assert "--vary expects KEY=V1,V2" in capsys.readouterr().err


def test_ablate_varies_a_run_option_such_as_precision(tmp_path, capsys):
    """``--vary precision=fp32,bf16`` changes how the runs train, not their hyperparameters."""
    out = tmp_path / "precision"
    argv = ablate_argv("precision=fp32,bf16", out)
    assert main(argv) == 0
    assert "| precision | seeds |" in capsys.readouterr().out
    assert list(pd.read_csv(out / "ablation.csv").precision) == ["fp32", "bf16"]
    for value in ("fp32", "bf16"):
        (record,) = [json.loads(p.read_text()) for p in (out / f"precision={value}").glob("*.json")]
        assert record["precision"] == value and record["hparams"]["hidden"] == 8
    assert main([*argv[:4], "precision=fp32,fp8", *argv[5:]]) == 2
    assert "precision='fp8'" in capsys.readouterr().err


def test_ablation_table_pairs_by_seed_and_counts_discordant_images():
    from bench.ablate import ablation_table

    def record(seed, correct):
        predictions = [{"file": f"{i}.png", "correct": c} for i, c in enumerate(correct)]
        accuracy = sum(correct) / len(correct)
        return {"seed": seed, "test_seq_acc": accuracy, "test_cer": 0.1, "predictions": predictions}

    records = {
        "a": [record(0, [1, 1, 0, 0]), record(1, [1, 0, 0, 0])],
        "b": [record(0, [1, 1, 1, 1]), record(1, [1, 1, 1, 0])],
    }
    table = ablation_table("k", records)
    b = table.iloc[1]
    assert (b.gained, b.lost) == (4, 0) and b.acc_diff == 0.5
    assert b.p == 0.125  # exact McNemar: 4 discordant pairs, all one way
    assert b.acc_diff_low <= 0.5 <= b.acc_diff_high <= 1
    # seeds' accuracies 0.5, 0.25 against 1.0, 0.75: Welch's t = -2.83 on 2 degrees of freedom
    assert b.p_seeds == pytest.approx(0.1056, abs=1e-3) and np.isnan(table.iloc[0].p_seeds)


def test_ablation_table_of_variants_tested_on_other_images():
    """A split ablation tests each variant on its own images: paired on the images both tested,
    unpaired when they share none."""
    from bench.ablate import ablation_table, markdown

    def record(seed, correct, first):
        predictions = [{"file": f"{first + i}.png", "correct": c} for i, c in enumerate(correct)]
        accuracy = sum(correct) / len(correct)
        return {"seed": seed, "test_seq_acc": accuracy, "test_cer": 0.1, "predictions": predictions}

    records = {  # "b" shares images 2 and 3 with "a", "c" none
        "a": [record(0, [1, 1, 1, 1], first=0)],
        "b": [record(0, [0, 1, 0, 0, 0, 0], first=2)],
        "c": [record(0, [0, 1, 0, 0, 0, 0], first=10)],
    }
    table = ablation_table("split", records)
    b, c = table.iloc[1], table.iloc[2]
    assert b.acc_diff == -0.5 and (b.gained, b.lost, b.paired_images, b.test_images) == (0, 1, 2, 6)
    assert c.acc_diff == pytest.approx(1 / 6 - 1) and c.paired_images == 0
    assert c.acc_diff_low < c.acc_diff < c.acc_diff_high
    text = markdown(table)
    assert "on 2 shared" in text and "0 / 1 of 2 shared" in text and "unpaired" in text


def test_ablation_interval_draws_seeds_then_images():
    """Seeds reading 4%, 18% and 76% of the same 200 images: the accuracy interval is the
    leaderboard's two-level bootstrap (seeds drawn, then each drawn seed's images), as wide as the
    seeds' spread, not the few points of the images' sampling alone."""
    from bench.ablate import ablation_table, correct_by_file
    from bench.report.stats import bootstrap_ratio

    def record(seed, right):
        predictions = [{"file": f"{i}.png", "correct": i < right} for i in range(200)]
        return {
            "seed": seed,
            "test_seq_acc": right / 200,
            "test_cer": 0.1,
            "predictions": predictions,
        }

    records = {"a": [record(0, 8), record(1, 36), record(2, 152)]}
    row = ablation_table("k", records).iloc[0]
    expected = bootstrap_ratio([correct_by_file(r).values for r in records["a"]])
    assert (row.test_seq_acc, row.acc_low, row.acc_high) == pytest.approx(expected)
    assert row.acc_low < 0.1 and row.acc_high > 0.6


def reproduction_record(approach, seed, correct, cer, dataset="captcha-v2"):
    return {
        "approach": approach,
        "dataset": dataset,
        "split": "source",
        "seed": seed,
        "test_seq_acc": sum(correct) / len(correct),
        "test_cer": cer,
        "predictions": [{"correct": c} for c in correct],
    }


def test_reproduction_summary_gives_intervals_source_figures_and_verdicts():
    """The sources' figures and the targets come from the checked-in targets.json beside the
    reproduction's results."""
    from bench.report.reproduction import read_targets, summary_lines

    targets = read_targets(REPO / "reports" / "reproduction")
    records = [
        reproduction_record("crnn", 0, [1] * 99 + [0], 0.002),
        reproduction_record("crnn", 1, [1] * 98 + [0] * 2, 0.004),
        reproduction_record("multihead", 0, [1] * 95 + [0] * 5, 0.01),
        reproduction_record("poolfree", 0, [1] * 80 + [0] * 20, 0.05),
    ]
    rows = {line.split(" | ")[0].strip("| "): line for line in summary_lines(records, targets)[2:]}
    assert "| 2 | 98.50% (" in rows["crnn"]
    assert rows["crnn"].endswith("| reproduced (2 seeds; 3 needed) |")
    assert "CER 0.24% of 250 (" in rows["crnn"]
    assert "| inside the source's interval (1 seed" in rows["multihead"]  # 95% in 91.9-99.0%
    assert "| below (1 seed" in rows["poolfree"]
    assert "seq acc 96.15% of 104 (90.53% to 98.49%) | seq acc >= 95% |" in rows["poolfree"]


def test_reproduction_summary_reads_the_targets_beside_the_results(tmp_path):
    """write_table takes targets.json from the folder it collects; without one the source,
    target and verdict columns are "-"; a target of a metric the file does not name is refused."""
    from bench.report.reproduction import read_targets, summary_lines
    from bench.results import write_table

    records = [reproduction_record("crnn", s, [1] * 99 + [0], 0.002) for s in range(3)]
    (line,) = summary_lines(records, None)[2:]
    assert line.endswith("| 0.20% | - | - | - |")
    for record in records:
        (tmp_path / f"crnn-captcha-v2-seed{record['seed']}.json").write_text(json.dumps(record))
    write_table(tmp_path)
    assert "| 0.20% | - | - | - |" in (tmp_path / "results.md").read_text()
    targets = {
        "min_seeds": 3,
        "metrics": {"test_seq_acc": {"name": "seq acc", "higher_is_better": True}},
        "source_figures": {},
        "targets": [
            {"approach": "crnn", "dataset": "captcha-v2", "metric": "test_seq_acc", "value": 0.999}
        ],
    }
    (tmp_path / "targets.json").write_text(json.dumps(targets))
    write_table(tmp_path)
    assert "| 0.20% | - | seq acc >= 100% | below |" in (tmp_path / "results.md").read_text()
    targets["targets"][0]["metric"] = "test_cer"
    (tmp_path / "targets.json").write_text(json.dumps(targets))
    with pytest.raises(ValueError, match="metric 'test_cer' is not one of its metrics"):
        read_targets(tmp_path)


def test_results_table_takes_records_that_predate_new_columns(tmp_path):
    from bench.results import write_table

    old = {"approach": "crnn", "seed": 0, "epochs": 1, "dataset": "captcha-v2"}
    old |= {"test_seq_acc": 0.5, "test_char_acc": 0.8, "test_cer": 0.2, "params": 1e6}
    old |= {"flops": 1e9, "train_seconds": 10.0, "img_per_s": 5.0, "device": "cpu", "threads": 1}
    new = {**old, "seed": 1, "source": "001", "split": "source", "n_train": 797}
    for record in (old, new):
        (tmp_path / f"crnn-captcha-v2-seed{record['seed']}.json").write_text(json.dumps(record))
    frame = write_table(tmp_path)
    assert frame.n_train.tolist()[1] == 797
    text = (tmp_path / "results.md").read_text()
    assert "| crnn | - | - | - | - | 0 |" in text and "| crnn | 001 | source | 797 |" in text


def test_help_and_parsing_load_no_heavy_library():
    """`--help` and argument errors answer without torch, timm, MLflow, Optuna or pandas: the
    commands import what they use."""
    code = (
        "import sys, bench.cli as c; c.build_parser().parse_args(['train', '--approach', 'crnn']);"
        "print(sorted(m for m in ('torch', 'timm', 'mlflow', 'optuna', 'pandas', 'seaborn')"
        " if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


REPO = Path(__file__).resolve().parents[1]
needs_make = pytest.mark.skipif(
    shutil.which("make") is None or not (REPO / ".venv" / ".installed").exists(),
    reason="needs make and the project's .venv (make test creates it)",
)


@needs_make
def test_make_worker_without_storage_says_what_to_set():
    out = subprocess.run(["make", "-s", "worker"], cwd=REPO, capture_output=True, text=True)
    assert out.returncode != 0 and "make worker needs STORAGE=" in out.stderr


@needs_make
def test_make_tune_passes_epochs():
    out = subprocess.run(
        ["make", "-n", "tune", "EPOCHS=3"], cwd=REPO, capture_output=True, text=True, check=True
    )
    assert "--epochs 3" in out.stdout


def test_help_shows_defaults(capsys):
    with pytest.raises(SystemExit):
        main(["train", "--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "training device (auto: CUDA if any) (default: auto)" in out
    assert "(default: None)" not in out and "(default: )" not in out


def test_report_takes_several_experiments_at_once():
    from bench.cli import build_parser

    args = build_parser().parse_args(["report", "--experiment", "a", "b", "--experiment", "c"])
    assert args.experiment == ["a", "b", "c"]


def test_report_and_run_read_ablations_only_when_given():
    """No folder of ablation tables by default (the report then has no 'What matters' section);
    `--ablations DIR` names one, for `report` and for `run`'s report."""
    from bench.cli import build_parser

    parser = build_parser()
    for command in (["report"], ["run", "--suite", "quick"]):
        assert parser.parse_args(command).ablations is None
        assert parser.parse_args([*command, "--ablations", "tables"]).ablations == Path("tables")


def test_an_interrupt_is_reported_on_its_own_line(monkeypatch, capsys):
    from bench.cli import tools

    def interrupted(args):
        print("epoch 3/60 ...", end="", file=sys.stderr)  # a progress bar's unfinished line
        raise KeyboardInterrupt

    monkeypatch.setattr(tools, "cmd_list", interrupted)
    assert main(["list"]) == 130
    assert capsys.readouterr().err.endswith(
        "epoch 3/60 ...\ninterrupted; re-run the same command to resume\n"
    )


def test_unknown_approaches_are_refused_without_importing_them():
    """The file names give the registry's names, so the quick check agrees with it."""
    from bench.cli import approach_names

    assert approach_names() == sorted(list_approaches())
    out = subprocess.run(
        [sys.executable, "-X", "importtime", "-m", "bench", "train", "--approach", "nope"],
        capture_output=True,
        text=True,
    )
    assert out.returncode == 2 and "unknown approach 'nope'; known: ce-crnn" in out.stderr
    assert "| torch\n" not in out.stderr  # refused before torch was imported
