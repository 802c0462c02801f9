"""What tuning and suite workers share: extra worker processes, and a claimed trial's outcome
(Ctrl-C puts its work back in the queue, an error is recorded so that it counts as finished)."""

from __future__ import annotations

import math
import multiprocessing
import os
import signal
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import optuna

from bench import interrupts

POLL_S = 2.0  # how often a worker looks again when the work left is in others' hands
MAX_PER_GPU = 8  # measured: 8 processes of a seed-style loop gave 2.7x one process's throughput
CUDA_CONTEXT_MB = 600.0  # each process's CUDA context and cuDNN/cuBLAS workspaces
MEMORY_MARGIN = 2.0  # a tuning trial may draw a larger batch than the probed default
INTERRUPT_GRACE_S = 10.0  # an interrupted run's workers get this long to stop on their own


def parse_workers(value: str) -> int | str:
    """``--workers``: a positive count, or ``auto``."""
    if value == "auto":
        return value
    try:
        count = int(value)
    except ValueError:
        count = 0
    if count < 1:
        raise ValueError(f"--workers {value}: use a positive count or auto")
    return count


def workers_per_gpu(free_mb: Sequence[float], step_mb: float) -> int:
    """How many training processes fit on each GPU (the smallest free memory decides): each needs
    its CUDA context and ``MEMORY_MARGIN`` times the probed step's peak memory; 1 to 8."""
    need = CUDA_CONTEXT_MB + MEMORY_MARGIN * step_mb
    return max(1, min(MAX_PER_GPU, math.floor(min(free_mb) / need)))


def visible_gpus() -> list[str]:
    """The GPUs this process may use, as ``CUDA_VISIBLE_DEVICES`` names them."""
    import torch

    listed = os.environ.get("CUDA_VISIBLE_DEVICES")
    if listed:
        return [name.strip() for name in listed.split(",") if name.strip()]
    return [str(i) for i in range(torch.cuda.device_count())]


def auto_workers(step_mb: float | None) -> tuple[int, list[str]]:
    """``--workers auto``: on CUDA, :func:`workers_per_gpu` per visible GPU from its free memory
    and ``step_mb`` (the probed peak of one training step), spread round-robin over the GPUs;
    without CUDA one process (a training already uses every core). Returns the count and the
    visible GPUs (empty without CUDA) for :func:`worker_processes` to deal round-robin."""
    import torch

    if step_mb is None or not torch.cuda.is_available():
        return 1, []
    gpus = visible_gpus()
    free = [torch.cuda.mem_get_info(i)[0] / 2**20 for i in range(len(gpus))]
    per_gpu = workers_per_gpu(free, step_mb)
    count = per_gpu * len(gpus)
    mps = os.path.exists(os.environ.get("CUDA_MPS_PIPE_DIRECTORY", "/tmp/nvidia-mps"))
    print(
        f"workers: {count} ({per_gpu} per GPU on {len(gpus)} GPU(s), {step_mb:.0f} MB a training "
        f"step, CUDA MPS {'on' if mps else 'off'})",
        flush=True,
    )
    return count, gpus


@contextmanager
def worker_processes(
    target: Callable[..., None], args: tuple, count: int, gpus: Sequence[str] = ()
) -> Iterator[None]:
    """``count`` extra processes running ``target(*args)`` (spawned: no CUDA state is shared),
    joined when the block ends. With ``gpus``, extra worker ``i`` sees only
    ``gpus[i mod len(gpus)]`` as its CUDA device (this process, worker 0, keeps the first)."""
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=_worker_main, args=(target, args)) for _ in range(count)]
    for i, process in enumerate(processes, start=1):
        if gpus:
            with visible_device(gpus[i % len(gpus)]):
                process.start()
        else:
            process.start()
    try:
        yield
    except KeyboardInterrupt:
        # Ctrl-C in a terminal reached every worker; a kill reached this process only: workers
        # still running after the grace are interrupted the same way (their runs end KILLED and
        # their work is queued again)
        deadline = time.monotonic() + INTERRUPT_GRACE_S
        for process in processes:
            process.join(max(0.0, deadline - time.monotonic()))
            if process.is_alive():
                os.kill(process.pid, signal.SIGTERM)
        raise
    finally:
        for process in processes:
            process.join()


def _worker_main(target: Callable[..., None], args: tuple) -> None:
    """An extra worker: SIGTERM interrupts it like Ctrl-C, then ``target(*args)``."""
    interrupts.catch()
    target(*args)


@contextmanager
def visible_device(gpu: str) -> Iterator[None]:
    """``CUDA_VISIBLE_DEVICES=gpu`` for the processes started in the block (spawn copies the
    environment at start)."""
    before = os.environ.get("CUDA_VISIBLE_DEVICES")
    os.environ["CUDA_VISIBLE_DEVICES"] = gpu
    try:
        yield
    finally:
        if before is None:
            del os.environ["CUDA_VISIBLE_DEVICES"]
        else:
            os.environ["CUDA_VISIBLE_DEVICES"] = before


@contextmanager
def claimed(
    trial: optuna.Trial,
    user_attrs: Mapping[str, Any] | None = None,
    params: Mapping[str, Any] | None = None,
) -> Iterator[None]:
    """The work of a claimed trial. Ctrl-C enqueues the same work again (``params``, by default
    the trial's parameters when it stopped, and ``user_attrs``) and re-raises; an error other than
    a prune becomes the trial's ``error`` attribute (a failed trial that counts as finished) and
    is re-raised."""
    try:
        yield
    except optuna.TrialPruned:
        raise
    except KeyboardInterrupt:
        trial.set_user_attr("interrupted", True)
        trial.study.enqueue_trial(
            dict(trial.params if params is None else params),
            user_attrs={**(user_attrs or {}), "retry_of": trial.number},
        )
        raise
    except Exception as err:
        trial.set_user_attr("error", f"{type(err).__name__}: {err}"[:2000])
        raise
