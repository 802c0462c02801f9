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
from bench.study.workers import POLL_S, claimed, worker_processes

__all__ = [
    "DEFAULT_STORAGE",
    "POLL_S",
    "StorageLock",
    "claimed",
    "counted",
    "open_storage",
    "storage_url",
    "trial_counts",
    "trial_key",
    "worker_processes",
]
