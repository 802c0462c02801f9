"""The CUDA-only paths run on CPU: capture, replay and the capture-failure fallback of
:class:`~bench.training.graphs.StaticStep`, perf's graph timing and ``--workers auto``, with the
stand-in of ``tests/conftest.py`` in place of ``torch.cuda.graph``."""

from __future__ import annotations

import argparse
import math

import pytest
import torch

from bench.data import load_dataset
from bench.spec import make_spec
from bench.training import build_trainer, seed_everything
from bench.training.graphs import WARMUP_STEPS
from tests.conftest import StandInCapture

TINY = "synthetic:tiny,count=120"
SMALL = {"height": 32, "width": 96, "hidden": 16, "batch_size": 16, "optimizer": "adam"}
SMALL_GRU = {**SMALL, "seq_hidden": 16, "rotate": 5.0, "brightness": 0.2}


def trainer(approach: str = "crnn-gru", overrides: dict | None = None):
    dataset = load_dataset(TINY)
    spec = make_spec(approach, dataset, overrides or SMALL_GRU, device="cpu")
    seed_everything(0)
    return build_trainer(spec, dataset)


def test_the_builder_seeds_the_augmentation_generator():
    """``prepare`` returns a trainer whose batcher draws from its own seeded generator (a None
    generator crashed every capture that registered it)."""
    a, b = trainer(), trainer()
    assert isinstance(a.batcher.generator, torch.Generator)
    assert torch.equal(a.batcher.generator.get_state(), b.batcher.generator.get_state())


def test_captured_steps_warm_up_capture_once_per_batch_size_and_replay(stand_in_capture):
    """Warm-up steps, one capture per batch size (the full one and the partial last), replays
    after: the losses are those of the same static step run without capture."""
    losses = []
    for capture in (False, True):
        run = trainer()
        run.use_static_step(capture=capture)
        train = run.split.train
        batches = [train[:16]] * (WARMUP_STEPS + 3) + [train[16:21]] * (WARMUP_STEPS + 2)
        torch.manual_seed(1)
        losses.append([run.train_step(idx).item() for idx in batches])
    assert losses[1] == pytest.approx(losses[0], rel=1e-6)
    assert sorted(run.static.graphs) == [5, 16] and run.static.capture
    full, partial = stand_in_capture.graphs
    assert full.replays == 3 and partial.replays == 2  # the capture's own replay included
    assert full.generators == [run.batcher.generator]  # the augmentation stream is registered


def test_a_failed_capture_restores_the_generators_and_trains_eagerly(monkeypatch, capsys):
    from bench.training import graphs

    monkeypatch.setattr(graphs, "CAPTURE", StandInCapture(fail="operation not permitted"))
    run = trainer()
    run.use_static_step(capture=True)
    train = run.split.train
    for i in range(WARMUP_STEPS):
        run.train_step(train[16 * i : 16 * (i + 1)])
    before = run.batcher.generator.get_state(), torch.default_generator.get_state()
    loss = run.train_step(train[:16])  # the capture fails, the step runs eagerly
    assert "capture failed, training eagerly: operation not permitted" in capsys.readouterr().err
    assert run.static.capture is False and not run.static.graphs and math.isfinite(loss.item())
    after_restore = run.batcher.generator.get_state()  # the eager step drew again from it
    assert not torch.equal(after_restore, before[0])
    rerun = trainer()  # the same eager step from the restored state draws the same numbers
    rerun.batcher.generator.set_state(before[0])
    torch.default_generator.set_state(before[1])
    rerun.model.load_state_dict(run.model.state_dict())
    rerun.train_step(train[:16])
    assert torch.equal(rerun.batcher.generator.get_state(), after_restore)


def test_perf_times_the_captured_step(stand_in_capture):
    """perf's graph block builds a StaticStep straight from the builder's trainer."""
    from bench.perf import measure

    dataset = load_dataset(TINY)
    spec = make_spec("crnn-gru", dataset, SMALL_GRU, device="cpu")
    row = measure(spec, dataset, steps=2)
    assert row["graph_img_s"] > 0 and row["graph_speedup"] > 0
    assert stand_in_capture.graphs and stand_in_capture.graphs[0].replays >= 2


def test_workers_auto_fits_processes_per_gpu_from_free_memory(monkeypatch, capsys):
    """``--workers auto`` on (faked) CUDA: the probed step's memory and each GPU's free memory
    decide the count, dealt over the visible GPUs."""
    from bench import cli, perf

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    free = {0: 40 * 2**30, 1: 12 * 2**30}
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda i: (free[i], 80 * 2**30))
    probed = []
    monkeypatch.setattr(perf, "step_memory_mb", lambda spec, data: probed.append(spec) or 1500.0)
    args = argparse.Namespace(workers="auto", device="auto")
    count, gpus = cli.workers_from(args, lambda: [("spec-a", None), ("spec-b", None)])
    # 12 GiB free on the smaller GPU / (600 MB context + 2 x 1500 MB) = 3 per GPU
    assert (count, gpus) == (6, ["0", "1"]) and probed == ["spec-a", "spec-b"]
    assert "workers: 6 (3 per GPU on 2 GPU(s), 1500 MB a training step" in capsys.readouterr().out
