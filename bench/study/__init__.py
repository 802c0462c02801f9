"""Optuna plumbing shared by tuning and suites: storage, locks, worker processes."""

from bench.study.storage import (
    DEFAULT_STORAGE,
    StorageLock,
    counted,
    open_storage,
    storage_url,
    trial_counts,
    trial_key,
)
from bench.study.workers import (
    POLL_S,
    auto_workers,
    claimed,
    parse_workers,
    visible_gpus,
    worker_processes,
)

__all__ = [
    "DEFAULT_STORAGE",
    "POLL_S",
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
    "worker_processes",
]
