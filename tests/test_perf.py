"""The perf command runs on CPU and writes a well-formed table (speed itself is never asserted)."""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from bench.cli import main
from bench.perf import write

COLUMNS = {
    "approach",
    "device",
    "batch_size",
    "train_img_s",
    "train_pure_img_s",
    "train_efficiency",
    "eval_img_s",
    "eval_pure_img_s",
    "eval_efficiency",
    "source_style_img_s",
    "speedup_vs_source_style",
    "epoch_s",
    "latency_ms_p50",
    "latency_ms_p95",
    "peak_memory_mb",
    "flops_per_image",
    "train_tflop_s",
    "peak_tflop_s",
    "share_of_peak",
    "img_s_x2",  # two processes training at once (--concurrency 2)
}
CUDA_ONLY = {"graph_img_s", "graph_speedup"}  # the captured step: null on CPU


def test_perf_on_cpu_for_two_small_approaches_writes_json(tmp_path, capsys):
    out = tmp_path / "perf.json"
    code = main(
        [
            "perf",
            "--approach",
            "lstm-columns",
            "crnn-gru",
            "--dataset",
            "synthetic:tiny,count=120",
            "--set",
            "height=32",
            "--set",
            "width=96",
            "--set",
            "hidden=16",
            "--device",
            "cpu",
            "--batch-size",
            "16",
            "--steps",
            "2",
            "--out",
            str(out),
            "--mlflow",
            "--concurrency",
            "2",
        ]
    )
    assert code == 0
    rows = json.loads(out.read_text())
    assert [r["approach"] for r in rows] == ["lstm-columns", "crnn-gru"]
    for row in rows:
        assert set(row) == COLUMNS | CUDA_ONLY | {"graphs", "malloc"}
        assert row["malloc"] == "keep"  # the CLI kept glibc's freed memory (bench.allocator)
        assert row["graphs"] is False and all(row[key] is None for key in CUDA_ONLY)
        assert row["device"] == "cpu" and row["batch_size"] == 16
        for key in COLUMNS - {"approach", "device"}:
            assert isinstance(row[key], int | float) and math.isfinite(row[key]), key
            assert row[key] > 0, key
        assert row["latency_ms_p95"] >= row["latency_ms_p50"]
        ratio = row["train_img_s"] / row["train_pure_img_s"]
        assert row["train_efficiency"] == pytest.approx(ratio, rel=1e-6)
    assert "speedup_vs_source_style" in capsys.readouterr().out


def test_perf_refuses_an_unknown_output_format_before_measuring(tmp_path, capsys, monkeypatch):
    import pandas as pd

    from bench import perf

    with pytest.raises(ValueError, match="json or .csv"):
        write(pd.DataFrame([{"a": 1}]), tmp_path / "perf.txt")
    monkeypatch.setattr(perf, "perf", lambda *a, **k: pytest.fail("measured before checking"))
    assert main(["perf", "--approach", "crnn", "--out", str(tmp_path / "perf.txt")]) == 2
    assert "--out must end in .json or .csv" in capsys.readouterr().err


def test_timed_rounds_interleaves_one_step_a_round_on_cpu_and_takes_medians(monkeypatch):
    import torch

    from bench import perf

    now = [0.0]
    calls: list[tuple[str, int]] = []
    monkeypatch.setattr(perf.time, "perf_counter", lambda: now[0])
    real_durations = [100, 100, 5, 1, 9, 3]  # two warm-up steps, then four timed ones

    def real(i: int) -> None:
        calls.append(("real", i))
        now[0] += real_durations[sum(name == "real" for name, _ in calls) - 1]

    def pure(i: int) -> None:
        calls.append(("pure", i))
        now[0] += 2

    result = perf.timed_rounds(torch.device("cpu"), 4, {"real": real, "pure": pure})
    warmup, timed = calls[:4], calls[4:]
    assert warmup == [("real", 0), ("real", 1), ("pure", 0), ("pure", 1)]
    assert [name for name, _ in timed] == ["real", "pure"] * 4  # alternating, one step a round
    assert [i for name, i in timed if name == "real"] == [0, 1, 2, 3]  # a new batch each round
    assert result == {"real": 4.0, "pure": 2.0}  # medians of (5, 1, 9, 3) and (2, 2, 2, 2)


def test_latency_times_each_runtime_and_batch_after_its_warmup(tmp_path, capsys):
    from bench.latency import call_ms

    calls = []
    ms = call_ms(lambda images: calls.append(len(images)), np.zeros((3, 1)), warmup=4, runs=6)
    assert len(calls) == 10 and len(ms) == 6 and (ms >= 0).all()

    out = tmp_path / "latency.csv"
    args = ["perf", "--latency", "--approach", "crnn-modified", "--batches", "1", "3"]
    assert main([*args, "--warmup", "2", "--runs", "5", "--out", str(out)]) in (None, 0)
    table = pd.read_csv(out)
    assert set(zip(table.runtime, table.batch, strict=True)) == {
        ("torch-cpu", 1),
        ("torch-cpu", 3),
        ("onnxruntime-cpu", 1),
        ("onnxruntime-cpu", 3),
    }
    assert (table.warmup == 2).all() and (table.runs == 5).all() and (table.threads >= 1).all()
    assert (table.p50_ms <= table.p95_ms).all() and (table.p95_ms <= table.p99_ms).all()
    assert "crnn-modified onnxruntime-cpu batch 3: p50" in capsys.readouterr().out
