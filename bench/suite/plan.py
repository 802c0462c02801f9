"""Sizing a suite before it runs: its units, their epochs and steps, and an estimated wall time
on this machine from a short probe of each approach's training step and validation.

The probe trains nothing that is kept and creates no MLflow run or Optuna study: per (dataset,
approach) it builds the final runs' trainer (seed 0, fold 0), takes warm-up steps (and the
capture, where the run is captured), times a few steps and one validation pass, with the torch
threads one of the suite's workers gets.
"""

from __future__ import annotations

import heapq
import math
import statistics
import time
from dataclasses import dataclass, field
from typing import Any

import pandas as pd
import torch

from bench.hparams import format_duration
from bench.spec import Recipe, RunSpec
from bench.suite.schema import Suite
from bench.training import build_trainer
from bench.training.graphs import WARMUP_STEPS

PROBE_STEPS = 5  # timed training steps per approach (their median), after the warm-up
TRACKING_S = 2.0  # per run: MLflow params, figures and predictions (measured on the 2-core CPU)
# on one GPU, W processes together train this many times faster than one (measured on an H100
# with a source-style loop: 8 processes gave 2.7x); where `bench perf` measured the suite's own
# approaches (img_s_xN columns), pass its table instead
SHARED_GPU_SPEEDUP = {1: 1.0, 2: 1.7, 4: 2.3, 8: 2.7}


@dataclass
class Probe:
    """One approach's measured costs on this machine."""

    step_s: float  # one training step at the run's batch size
    eval_s: float  # one validation pass
    test_s: float  # one pass over the test part
    steps_per_epoch: int


@dataclass
class Plan:
    """The suite's units as rows (one per dataset, approach and stage) and the wall estimate."""

    suite: Suite
    device: str
    workers: int
    threads: int
    rows: pd.DataFrame
    wall_s: float
    notes: list[str] = field(default_factory=list)

    def lines(self) -> list[str]:
        """The plan as the console shows it."""
        suite = self.suite
        finals = len(suite.replicates)
        seeds = f"{len(suite.seeds)} seed{'s' * (len(suite.seeds) > 1)}"
        shape = f"{seeds} x {suite.folds} folds" if suite.folds else seeds
        head = (
            f"plan of suite {suite.name}: {len(suite.pairs)} units (dataset x approach), "
            f"{suite.trials} tuning trials and {finals} final trainings ({shape}) each; "
            f"{self.workers} worker(s) on {self.device}, {self.threads} thread(s) each"
        )
        shown = self.rows.assign(
            step_s=(self.rows.step_s * 1000).round(1),
            eval_s=self.rows.eval_s.round(2),
            per_run_s=self.rows.per_run_s.round(0).astype(int),
            total_s=self.rows.total_s.round(0).astype(int),
        ).rename(columns={"step_s": "step_ms"})
        return [
            head,
            shown.to_string(index=False),
            f"estimated wall time: {format_duration(self.wall_s)} ({self.wall_s:.0f} s)",
            *self.notes,
        ]


def probe(spec: RunSpec, dataset: Any, steps: int = PROBE_STEPS) -> Probe:
    """Time ``steps`` training steps (after warm-up, and capture where ``spec.graphs``) and one
    validation and test pass of ``spec``'s trainer."""
    trainer = build_trainer(spec, dataset)
    idx = trainer.split.train[: trainer.batch_size].to(trainer.device)
    for _ in range(WARMUP_STEPS + 1 if spec.graphs else 1):
        trainer.train_step(idx)
    times = []
    for _ in range(steps):  # the median step: a busy moment of the machine does not decide it
        sync(trainer.device)
        started = time.perf_counter()
        trainer.train_step(idx)
        sync(trainer.device)
        times.append(time.perf_counter() - started)
    step_s = statistics.median(times)
    seconds = []
    for part in (trainer.split.val, trainer.split.test):
        started = time.perf_counter()
        trainer.evaluate(part)
        sync(trainer.device)
        seconds.append(time.perf_counter() - started)
    return Probe(step_s, seconds[0], seconds[1], trainer.steps_per_epoch)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def run_seconds(hparams: dict[str, Any], costs: Probe, test: bool) -> tuple[int, float]:
    """Epochs and seconds of one run: its epochs (or as many as its budget buys), each with a
    validation pass, then the final pass (test or validation) with the inference timing (about
    two passes more) and the tracking."""
    epoch_train = costs.steps_per_epoch * costs.step_s
    epochs = int(hparams["epochs"])
    if hparams["budget"]:
        epochs = min(epochs, max(1, math.ceil(hparams["budget"] / epoch_train)))
        train = min(hparams["budget"], epochs * epoch_train)
    else:
        train = epochs * epoch_train
    final = costs.test_s if test else costs.eval_s
    return epochs, train + epochs * costs.eval_s + 3 * final + TRACKING_S


def schedule(durations: list[float], workers: int) -> float:
    """Wall time of jobs taken in order by the first free of ``workers`` workers."""
    free = [0.0] * workers
    for seconds in durations:
        heapq.heapreplace(free, free[0] + seconds)
    return max(free)


def plan_suite(
    suite: Suite,
    recipes: dict[tuple[str, str], tuple[Recipe, Recipe]],
    workers: int,
    speedup: dict[int, float] | None = None,
) -> Plan:
    """Probe every (dataset, approach) of ``suite`` and estimate its wall time with ``workers``
    processes on this machine (each with its share of the CPU threads; on CUDA sharing one GPU,
    ``speedup[W]`` times faster together than one: :data:`SHARED_GPU_SPEEDUP` unless given)."""
    threads = max(1, torch.get_num_threads() // workers)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    rows, jobs = [], []
    device = ""
    try:
        for name, approach in suite.pairs:
            tuning, final = recipes[name, approach]
            spec = final.spec()
            device = spec.device
            costs = probe(spec, final.load_dataset())
            stages = [("final", final, len(suite.replicates), True)]
            if suite.trials:
                stages.insert(0, ("tuning", tuning, suite.trials, False))
            for stage, recipe, count, test in stages:
                hparams = recipe.hparams()
                epochs, seconds = run_seconds(hparams, costs, test)
                jobs += [seconds] * count
                rows.append(
                    {
                        "dataset": name,
                        "approach": approach,
                        "stage": stage,
                        "runs": count,
                        "epochs": epochs,
                        "steps_per_epoch": costs.steps_per_epoch,
                        "batch": int(hparams["batch_size"]),
                        "step_s": costs.step_s,
                        "eval_s": costs.eval_s,
                        "per_run_s": seconds,
                        "total_s": seconds * count,
                    }
                )
    finally:
        torch.set_num_threads(before)
    notes = [
        f"probe: the median of {PROBE_STEPS} timed steps after warm-up and one validation and "
        f"test pass per approach, {threads} thread(s); tuning trials counted at their full "
        f"epochs (pruning only shortens them); {TRACKING_S:.0f} s of tracking per run"
    ]
    wall = schedule(sorted(jobs, reverse=True), workers)
    if device == "cuda" and workers > 1:
        table = speedup or SHARED_GPU_SPEEDUP
        factor = table.get(workers) or table[max(k for k in table if k <= workers)]
        wall = schedule(sorted(jobs, reverse=True), 1) / factor
        notes.append(f"{workers} processes share the GPU: {factor:.1f}x one process's speed")
    return Plan(suite, device, workers, threads, pd.DataFrame(rows), wall, notes)
