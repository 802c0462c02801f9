"""What tuning and suite workers share: extra worker processes, and a claimed trial's outcome
(Ctrl-C puts its work back in the queue, an error is recorded so that it counts as finished)."""

from __future__ import annotations

import multiprocessing
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import optuna

POLL_S = 2.0  # how often a worker looks again when the work left is in others' hands


@contextmanager
def worker_processes(target: Callable[..., None], args: tuple, count: int) -> Iterator[None]:
    """``count`` extra processes running ``target(*args)`` (spawned: no CUDA state is shared),
    joined when the block ends."""
    context = multiprocessing.get_context("spawn")
    processes = [context.Process(target=target, args=args) for _ in range(count)]
    for process in processes:
        process.start()
    try:
        yield
    finally:
        for process in processes:
            process.join()


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
