"""Deployment latency that says how it was measured: each approach's recognizer (uint8 images in,
logits out, normalisation included; untrained weights: time does not depend on them) in each
runtime (PyTorch eager; onnxruntime on the CPU with the exported file; PyTorch on CUDA where there
is one), at each batch size: ``warmup`` untimed calls, then ``runs`` timed calls one by one
(synchronised on CUDA), reported as p50/p95/p99 milliseconds per call with the threads used."""

from __future__ import annotations

import copy
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from bench.approaches import get_approach
from bench.export import OnnxReader, export_onnx
from bench.recognizer import Recognizer, recognizer_metadata
from bench.spec import create_model

CLASSES, POSITIONS = 20, 5  # captcha-v2's shape: 19 characters and a blank, five to an image
BATCHES, WARMUP, RUNS = (1, 32), 50, 200


def call_ms(
    call: Callable[[np.ndarray], object],
    images: np.ndarray,
    warmup: int,
    runs: int,
    cuda: bool = False,
) -> np.ndarray:
    """Milliseconds of each of ``runs`` timed calls ``call(images)`` after ``warmup`` untimed
    ones."""
    for _ in range(warmup):
        call(images)
    times = np.empty(runs)
    for i in range(runs):
        if cuda:
            torch.cuda.synchronize()
        started = time.perf_counter()
        call(images)
        if cuda:
            torch.cuda.synchronize()
        times[i] = (time.perf_counter() - started) * 1000
    return times


def runtimes(
    approach: str, folder: Path, threads: int
) -> tuple[dict[str, Callable[[np.ndarray], object]], tuple[int, int, int]]:
    """The runtimes of one approach's recognizer, as functions of a uint8 batch; its input size."""
    model, hp = create_model(approach, CLASSES, POSITIONS)
    recognizer = Recognizer(model, hp["mean"], hp["std"]).eval()
    codec = get_approach(approach).codec
    charset = "".join(chr(ord("a") + i) for i in range(CLASSES - 1))
    meta = recognizer_metadata(approach, codec, charset, POSITIONS, hp)
    reader = OnnxReader(export_onnx(recognizer, meta, folder / f"{approach}.onnx"), threads)

    def eager(images: np.ndarray) -> object:
        with torch.inference_mode():
            return recognizer(torch.from_numpy(images))

    calls: dict[str, Callable[[np.ndarray], object]] = {
        "torch-cpu": eager,
        "onnxruntime-cpu": reader.logits,
    }
    if torch.cuda.is_available():
        on_gpu = copy.deepcopy(recognizer).cuda()  # the CPU runtime keeps its own

        def cuda(images: np.ndarray) -> object:
            with torch.inference_mode():
                return on_gpu(torch.from_numpy(images).cuda(non_blocking=True))

        calls["torch-cuda"] = cuda
    return calls, (int(hp["channels"]), int(hp["height"]), int(hp["width"]))


def latency(
    approaches: Sequence[str],
    batches: Sequence[int] = BATCHES,
    warmup: int = WARMUP,
    runs: int = RUNS,
    progress: Callable[[str], None] = print,
) -> pd.DataFrame:
    """One row per approach, runtime and batch size."""
    threads = torch.get_num_threads()
    rows = []
    with tempfile.TemporaryDirectory(prefix="bench-latency-") as folder:
        for approach in approaches:
            calls, shape = runtimes(approach, Path(folder), threads)
            for runtime, call in calls.items():
                for batch in batches:
                    images = np.random.default_rng(0).integers(0, 256, (batch, *shape), np.uint8)
                    ms = call_ms(call, images, warmup, runs, runtime == "torch-cuda")
                    p50, p95, p99 = np.percentile(ms, [50, 95, 99])
                    rows.append(
                        {
                            "approach": approach,
                            "runtime": runtime,
                            "batch": batch,
                            "threads": threads,
                            "warmup": warmup,
                            "runs": runs,
                            "p50_ms": p50,
                            "p95_ms": p95,
                            "p99_ms": p99,
                            "img_per_s": batch * 1000 / p50,
                        }
                    )
                    progress(
                        f"{approach} {runtime} batch {batch}: p50 {p50:.2f} ms, p95 {p95:.2f} "
                        f"ms, p99 {p99:.2f} ms ({runs} runs after {warmup}, {threads} threads)"
                    )
    return pd.DataFrame(rows)
