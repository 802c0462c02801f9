"""Speed of the training pipeline: ours against pure compute and against the sources' data loading.

For each approach, in one process: training and evaluation img/s of the real pipeline (tensor
store on the device, batches drawn by index, augmentation on the device, the model step), the same
with inputs pre-staged on the device (pure compute; pipeline efficiency = real / pure), a reference
loop in the sources' style (a ``Dataset`` that opens, converts and resizes each image with PIL for
every item, through a ``DataLoader``), one real epoch's wall time, single-image latency, peak
memory, and achieved FLOP/s against a matrix-multiply peak measured on the same device. On CUDA
also the step captured as CUDA graphs (:mod:`bench.training.graphs`) against the eager one, and
aggregate training throughput with 1, 2, 4, 8 processes on the device (many trials per GPU).
"""

from __future__ import annotations

import multiprocessing
import resource
import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from PIL import Image

from bench.allocator import malloc_mode
from bench.data import Dataset, load_dataset
from bench.data.store import MODES
from bench.options import graph_blocker
from bench.spec import RunSpec
from bench.training import EVAL_BATCH, Trainer, build_trainer, graphs
from bench.training.graphs import WARMUP_STEPS

TRAIN_FLOPS_FACTOR = 3  # backward costs about twice the forward pass
CUDA_ROUNDS = 5


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def timed(
    device: torch.device, steps: int, step: Callable[[int], None], warmup: int = 2, first: int = 0
) -> float:
    """Seconds per timed call of ``step``, synchronised on CUDA: ``step(0 .. warmup - 1)`` untimed,
    then ``steps`` timed calls from ``step(warmup + first)`` on (the index picks the batch)."""
    for i in range(warmup):
        step(i)
    sync(device)
    started = time.perf_counter()
    for i in range(first, first + steps):
        step(warmup + i)
    sync(device)
    return (time.perf_counter() - started) / steps


def timed_rounds(
    device: torch.device, steps: int, steps_by_name: dict[str, Callable[[int], None]]
) -> dict[str, float]:
    """Seconds per step of each callable, median over alternating rounds (a, b, c, a, b, c, ...).

    All see the same machine state and a slow moment (another process, a busy neighbour of a
    virtual machine) does not decide a ratio. On CPU a round is one step (``steps`` rounds); on
    CUDA, where a per-step synchronisation would stall the queue, it is ``steps`` steps
    (``CUDA_ROUNDS`` rounds).
    """
    per_round, rounds = (steps, CUDA_ROUNDS) if device.type == "cuda" else (1, steps)
    for step in steps_by_name.values():  # warm-up
        step(0)
        step(1)
    times: dict[str, list[float]] = {name: [] for name in steps_by_name}
    for round_ in range(rounds):
        for name, step in steps_by_name.items():
            times[name].append(timed(device, per_round, step, warmup=0, first=round_ * per_round))
    return {name: statistics.median(seconds) for name, seconds in times.items()}


def matmul_peak(device: torch.device, size: int = 2048) -> float:
    """FLOP/s of a square matrix product in the training precision (bf16 on CUDA, fp32 on CPU)."""
    size = 8192 if device.type == "cuda" else size
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    seconds = timed(device, 5, lambda _: a @ b)
    return 2 * size**3 / seconds


class SourceStyleImages(torch.utils.data.Dataset):
    """The sources' way: every item opens, converts, resizes and normalises one file with PIL."""

    def __init__(self, paths: list[Path], run: Trainer):
        self.paths, self.cfg = paths, run.cfg
        self.mean = torch.tensor(run.cfg.mean).view(-1, 1, 1)
        self.std = torch.tensor(run.cfg.std).view(-1, 1, 1)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        with Image.open(self.paths[i]) as img:
            img = img.convert(MODES[self.cfg.channels]).resize((self.cfg.width, self.cfg.height))
            array = np.asarray(img, dtype=np.float32) / 255
        x = torch.from_numpy(array).view(self.cfg.height, self.cfg.width, -1).permute(2, 0, 1)
        return (x - self.mean) / self.std, i


def peak_memory_mb(device: torch.device) -> float:
    """Peak CUDA memory since the last reset, else the process's peak resident set."""
    if device.type == "cuda":
        return torch.cuda.max_memory_allocated(device) / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(
    spec: RunSpec,
    dataset: Dataset,
    steps: int = 10,
    loader_workers: int = 0,
    peak: float | None = None,
) -> dict[str, Any]:
    """Every figure of one approach (see the module docstring)."""
    run = build_trainer(spec, dataset, step="eager")
    dev = run.device
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    batch = run.batch_size
    generator = torch.Generator().manual_seed(0)
    train_idx = run.split.train.to(dev)
    batches = [
        train_idx[torch.randperm(len(train_idx), generator=generator)[:batch].to(dev)]
        for _ in range(steps + 2)
    ]
    run.model.train()
    train_s = train_seconds(run, dataset, batches, steps, loader_workers)
    graph_s = graph_seconds(run, batches, steps)
    if not spec.graphs:
        run.use_eager_step()  # the epoch below runs as the spec trains
    step_s = graph_s if spec.graphs else train_s["real"]
    eval_idx = run.split.test.to(dev)[: min(EVAL_BATCH, len(run.split.test))]
    eval_s = eval_seconds(run, eval_idx, steps)
    order = torch.randperm(len(train_idx), generator=generator).to(dev)
    epoch_s = epoch_seconds(run, train_idx[order])
    inference = run.measure_inference(run.split.test)
    train_img_s, eval_img_s = batch / train_s["real"], len(eval_idx) / eval_s["real"]
    achieved = run.flops * TRAIN_FLOPS_FACTOR * batch / step_s  # of the step the spec trains with
    return {
        "approach": spec.approach,
        "device": str(dev),
        "batch_size": batch,
        "train_img_s": train_img_s,
        "train_pure_img_s": batch / train_s["pure"],
        "train_efficiency": train_s["pure"] / train_s["real"],
        "graphs": spec.graphs,
        "graph_img_s": batch / graph_s,
        "graph_speedup": train_s["real"] / graph_s,
        "eval_img_s": eval_img_s,
        "eval_pure_img_s": len(eval_idx) / eval_s["pure"],
        "eval_efficiency": eval_s["pure"] / eval_s["real"],
        "source_style_img_s": batch / train_s["source_style"],
        "speedup_vs_source_style": train_s["source_style"] / train_s["real"],
        "epoch_s": epoch_s,
        "latency_ms_p50": inference["latency_ms_p50"],
        "latency_ms_p95": inference["latency_ms_p95"],
        "peak_memory_mb": peak_memory_mb(dev),
        "malloc": malloc_mode(),
        "flops_per_image": run.flops,
        "train_tflop_s": achieved / 1e12,
        "peak_tflop_s": (peak or 0) / 1e12,
        "share_of_peak": achieved / peak if peak else float("nan"),
    }


def train_seconds(
    run: Trainer,
    dataset: Dataset,
    batches: list[torch.Tensor],
    steps: int,
    loader_workers: int,
) -> dict[str, float]:
    """Seconds per eager training step: batches drawn on the device (``real``), the same batches
    made beforehand (``pure``), and the sources' way (``source_style``: a ``DataLoader`` over the
    files, decoded and augmented per item)."""
    dev, step = run.device, run.step

    def real_train(i: int) -> None:
        idx = batches[i % len(batches)]
        step(run.batch(idx, train=True), idx)

    staged = [run.batch(idx, train=True) for idx in batches]  # the same batches, made beforehand

    def pure_train(i: int) -> None:
        step(staged[i % len(batches)], batches[i % len(batches)])

    by_name = dict(zip((p.name for p in dataset.source.files), dataset.source.files, strict=True))
    paths = [by_name[run.store.files[i]] for i in run.split.train.tolist()]
    loader = torch.utils.data.DataLoader(
        SourceStyleImages(paths, run),
        batch_size=run.batch_size,
        shuffle=True,
        num_workers=loader_workers,
        generator=torch.Generator().manual_seed(0),
    )
    loader_batches = iter(loader)

    def source_style(_: int) -> None:
        nonlocal loader_batches
        try:
            x, i = next(loader_batches)
        except StopIteration:
            loader_batches = iter(loader)
            x, i = next(loader_batches)
        step(x.to(dev, non_blocking=True), run.split.train[i].to(dev))

    return timed_rounds(
        dev, steps, {"real": real_train, "pure": pure_train, "source_style": source_style}
    )


def graph_seconds(run: Trainer, batches: list[torch.Tensor], steps: int) -> float:
    """Seconds per training step captured as CUDA graphs (NaN where the step cannot be captured);
    the trainer keeps the captured step."""
    spec = run.spec
    if not graphs.CAPTURE.captures(run.device) or graph_blocker(spec.hparams, spec.compile):
        return float("nan")
    run.use_static_step(capture=True)
    seconds = timed(
        run.device, steps, lambda i: run.train_step(batches[i % len(batches)]), WARMUP_STEPS + 1
    )
    return seconds if run.static.graphs else float("nan")  # a failed capture said why


def eval_seconds(run: Trainer, eval_idx: torch.Tensor, steps: int) -> dict[str, float]:
    """Seconds per evaluation batch: made on the device (``real``), made beforehand (``pure``)."""
    staged_eval = run.batch(eval_idx)
    run.model.eval()
    seconds = timed_rounds(
        run.device,
        steps,
        {
            "real": lambda _: run.forward(run.batch(eval_idx)),
            "pure": lambda _: run.forward(staged_eval),
        },
    )
    run.model.train()
    return seconds


def epoch_seconds(run: Trainer, order: torch.Tensor) -> float:
    """Wall time of one real epoch: every training batch in ``order``, then validation."""
    sync(run.device)
    started = time.perf_counter()
    for idx in order[: run.n_train].split(run.batch_size):
        run.train_step(idx)
    run.evaluate(run.split.val)
    sync(run.device)
    return time.perf_counter() - started


def step_memory_mb(spec: RunSpec, dataset: Dataset, steps: int = 3) -> float:
    """Peak CUDA memory of a few training steps of ``spec`` (its data store included): what one
    more worker process needs besides its CUDA context."""
    dev = torch.device(spec.device)
    torch.cuda.reset_peak_memory_stats(dev)
    run = build_trainer(spec, dataset, step="eager")
    idx = run.split.train[: run.batch_size].to(dev)
    for _ in range(steps):
        run.train_step(idx)
    peak = torch.cuda.max_memory_allocated(dev) / 2**20
    del run
    torch.cuda.empty_cache()
    return peak


def _timed_worker(
    spec: RunSpec, data_dir: str | None, steps: int, barrier: Any, results: Any
) -> None:
    """One of several processes training ``spec`` at once: img/s of ``steps`` steps, timed from a
    barrier that all of them pass together."""
    dataset = load_dataset(spec.dataset, data_dir=data_dir, split_seed=spec.split_seed)
    run = build_trainer(spec, dataset)
    idx = run.split.train[: run.batch_size].to(run.device)
    for _ in range(WARMUP_STEPS + 2):  # warm-up (and capture)
        run.train_step(idx)
    sync(run.device)
    barrier.wait()
    started = time.perf_counter()
    for _ in range(steps):
        run.train_step(idx)
    sync(run.device)
    results.put(steps * run.batch_size / (time.perf_counter() - started))


def concurrent_img_s(spec: RunSpec, data_dir: str | None, processes: int, steps: int) -> float:
    """Aggregate training img/s of ``processes`` processes training ``spec`` on one device."""
    context = multiprocessing.get_context("spawn")
    barrier, results = context.Barrier(processes), context.Queue()
    workers = [
        context.Process(target=_timed_worker, args=(spec, data_dir, steps, barrier, results))
        for _ in range(processes)
    ]
    for worker in workers:
        worker.start()
    total = sum(results.get() for _ in workers)
    for worker in workers:
        worker.join()
    return total


def perf(
    specs: list[RunSpec],
    dataset: Dataset,
    steps: int = 10,
    loader_workers: int = 0,
    progress: Callable[[str], None] = print,
    concurrency: tuple[int, ...] = (),
    data_dir: str | None = None,
) -> pd.DataFrame:
    """One row per spec (all on one device); the matrix-multiply peak is measured once, first.
    ``concurrency``: process counts for the aggregate-throughput sweep (columns ``img_s_xN``)."""
    peak = matmul_peak(torch.device(specs[0].device))
    rows = []
    for spec in specs:
        rows.append(measure(spec, dataset, steps, loader_workers, peak))
        row = rows[-1]
        graphs = f", graphs {row['graph_speedup']:.1f}x" if row["graph_speedup"] > 0 else ""
        progress(
            f"{spec.approach}: train {row['train_img_s']:.1f} img/s (efficiency "
            f"{row['train_efficiency']:.2f}, {row['speedup_vs_source_style']:.1f}x the sources' "
            f"loop{graphs}), epoch {row['epoch_s']:.1f} s"
        )
        for count in concurrency:
            row[f"img_s_x{count}"] = concurrent_img_s(spec, data_dir, count, 5 * steps)
            progress(f"{spec.approach}: {count} processes: {row[f'img_s_x{count}']:.1f} img/s")
    return pd.DataFrame(rows)


def check_output(path: Path) -> None:
    """``--out``: a ``.json`` or ``.csv`` file in a folder that can be made."""
    if path.suffix not in (".json", ".csv"):
        raise ValueError(f"--out must end in .json or .csv, got {path}")
    path.parent.mkdir(parents=True, exist_ok=True)


def write(frame: pd.DataFrame, path: Path) -> None:
    """``.json`` (records) or ``.csv``."""
    check_output(path)
    if path.suffix == ".json":
        path.write_text(frame.to_json(orient="records", indent=2))
    else:
        frame.to_csv(path, index=False)
