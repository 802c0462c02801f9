"""Work shared by tuning and suites: the Optuna storage and its locks, the one worker loop, worker
processes."""

from bench.orchestration.queue import BUSY, DONE, TAKE, TIMEOUT, work_queue
from bench.orchestration.storage import (
    DEFAULT_STORAGE,
    StorageLock,
    counted,
    open_storage,
    storage_url,
    trial_counts,
    trial_key,
)
from bench.orchestration.workers import (
    POLL_S,
    auto_workers,
    claimed,
    parse_workers,
    visible_gpus,
    worker_processes,
)

__all__ = [
    "BUSY",
    "DEFAULT_STORAGE",
    "DONE",
    "POLL_S",
    "TAKE",
    "TIMEOUT",
    "StorageLock",
    "auto_workers",
    "claimed",
    "counted",
    "open_storage",
    "parse_workers",
    "storage_url",
    "trial_counts",
    "trial_key",
    "visible_gpus",
    "work_queue",
    "worker_processes",
]
