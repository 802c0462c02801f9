"""The one worker loop of tuning and suites: a study's trials are the queue of work."""

from __future__ import annotations

import time
from collections.abc import Callable

import optuna
from optuna.trial import FrozenTrial

from bench import interrupts
from bench.orchestration.storage import StorageLock
from bench.orchestration.workers import POLL_S

DONE, BUSY, TAKE, TIMEOUT = "done", "busy", "take", "timeout"


def work_queue(
    study: optuna.Study,
    look: Callable[[list[FrozenTrial]], str],
    take: Callable[[StorageLock | None], None],
    wait: bool = True,
    lock: str | None = None,
    timeout: float | None = None,
) -> str:
    """Take the study's work one trial at a time until none is left.

    Each pass fails the trials of dead workers first (Optuna's heartbeat; their work is queued
    again), then ``look`` reads the trials: ``DONE`` (nothing left), ``BUSY`` (what is left is
    in other workers' hands: wait for them, or without ``wait`` return) or ``TAKE``: ``take``
    runs one trial (``study.optimize(..., n_trials=1)``, which keeps the heartbeat). With
    ``lock`` (a storage URL) each pass holds its :class:`StorageLock`, and ``take`` gets it to
    release once its trial exists. Returns ``DONE``, ``BUSY`` or, after ``timeout`` seconds,
    ``TIMEOUT``.
    """
    started = time.monotonic()
    while timeout is None or time.monotonic() - started < timeout:
        interrupts.check()
        held = StorageLock(lock) if lock else None
        try:
            if held is not None:
                held.acquire()
            optuna.storages.fail_stale_trials(study)  # no-op without heartbeats
            state = look(study.get_trials(deepcopy=False))
            if state == DONE or (state == BUSY and not wait):
                return state
            if state == TAKE:
                take(held)
                continue
        finally:
            if held is not None:
                held.release()
        time.sleep(POLL_S)  # others run what is left; wait for them or their failure
    return TIMEOUT
