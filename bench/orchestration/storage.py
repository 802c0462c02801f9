"""Where studies live: storage URLs, the schema created once, the lock that serialises claiming
a trial between processes and machines, and how finished and dead trials are counted."""

from __future__ import annotations

import fcntl
import functools
import hashlib
import os
from pathlib import Path
from typing import IO

import optuna
import sqlalchemy
from optuna.trial import TrialState

from bench.tracking import end_orphaned_runs

DEFAULT_STORAGE = "sqlite:///optuna.db"
HEARTBEAT_S, GRACE_S = 10, 30


def storage_url(url: str | None = None) -> str:
    """``url``, else ``$BENCH_OPTUNA_STORAGE``, else a SQLite file in the working folder."""
    return url or os.environ.get("BENCH_OPTUNA_STORAGE") or DEFAULT_STORAGE


def is_journal(url: str) -> bool:
    """A journal file: ``journal:PATH``, or a path ending in ``.log`` or ``.jsonl``."""
    return url.startswith("journal:") or url.endswith((".log", ".jsonl"))


def storage_file(url: str) -> Path | None:
    """The local file a storage lives in (a SQLite database or a journal), None for a server."""
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///"))
    return Path(url.removeprefix("journal:")) if is_journal(url) else None


def open_storage(url: str) -> optuna.storages.BaseStorage:
    """An SQLAlchemy URL (RDB storage, with heartbeats) or a journal file (``*.log``)."""
    if is_journal(url):
        path = str(storage_file(url))
        return optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(path))

    def connect() -> optuna.storages.RDBStorage:
        return optuna.storages.RDBStorage(
            url,
            heartbeat_interval=HEARTBEAT_S,
            grace_period=GRACE_S,
            heartbeat_stale_trial_callback=retry_stale_trial,
        )

    if url in _SCHEMA_READY:
        return connect()
    with StorageLock(url):  # workers starting together must not all create the schema
        storage = connect()
    _SCHEMA_READY.add(url)
    return storage


_SCHEMA_READY: set[str] = set()


def trial_key(study_name: str, number: int) -> str:
    """Tags the MLflow run of a trial (``optuna_trial``), to find it from the study."""
    return f"{study_name}#{number}"


def retry_stale_trial(study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
    """A trial whose worker died (its heartbeat stopped): queued again with the same parameters,
    and its MLflow run, which nobody will end, ended FAILED."""
    optuna.storages.RetryHeartbeatStaleTrialCallback()(study, trial)
    end_orphaned_runs(trial_key(study.study_name, trial.number))


def counted(trial: optuna.trial.FrozenTrial) -> bool:
    """Finished trials that count towards the budget (an interrupted or dead one does not)."""
    return trial.state in (TrialState.COMPLETE, TrialState.PRUNED) or (
        trial.state == TrialState.FAIL and "error" in trial.user_attrs
    )


def trial_counts(study: optuna.Study) -> dict[str, int]:
    trials = study.get_trials(deepcopy=False)
    return {
        "complete": sum(t.state == TrialState.COMPLETE for t in trials),
        "pruned": sum(t.state == TrialState.PRUNED for t in trials),
        "failed": sum(t.state == TrialState.FAIL and "error" in t.user_attrs for t in trials),
        "running": sum(t.state == TrialState.RUNNING for t in trials),
    }


class StorageLock:
    """Serialises "count, then start a trial" between all processes sharing a storage, so that
    exactly ``trials`` trials start: a file lock beside a SQLite or journal file, an advisory lock
    in a PostgreSQL or MySQL server (held by a connection: a dead worker's lock goes with it).
    ``release`` may be called more than once."""

    def __init__(self, url: str, name: str = "captcha-bench"):
        local = storage_file(url)
        self.path = local.with_suffix(".bench-lock") if local else None
        self.url = None if local or url.startswith("sqlite") else url
        self.key = int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)
        self.name = name[:64]
        self._handle = None

    def acquire(self) -> StorageLock:
        """Wait for the lock. Interrupted at any point (Ctrl-C, a kill arriving just as the lock
        is granted) it holds nothing: a lock held by a lost handle would block this process's
        own next ``acquire`` for ever."""
        if self._handle is not None or (self.path is None and self.url is None):
            return self
        handle = self._connect()
        try:
            self._lock(handle)
        except BaseException:
            self._drop(handle)
            raise
        self._handle = handle
        return self

    def release(self) -> None:
        handle, self._handle = self._handle, None
        if handle is None:
            return
        try:
            if self.path is not None:
                fcntl.flock(handle, fcntl.LOCK_UN)
            elif handle.dialect.name == "postgresql":
                handle.exec_driver_sql(f"SELECT pg_advisory_unlock({self.key})")
            elif handle.dialect.name in ("mysql", "mariadb"):
                handle.exec_driver_sql("SELECT RELEASE_LOCK(%s)", (self.name,))
        finally:
            handle.close()

    def _connect(self) -> IO[str] | sqlalchemy.Connection:
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            return self.path.open("w")
        return server_engine(self.url).connect()

    def _lock(self, handle: IO[str] | sqlalchemy.Connection) -> None:
        if isinstance(handle, sqlalchemy.Connection):
            if handle.dialect.name == "postgresql":
                handle.exec_driver_sql(f"SELECT pg_advisory_lock({self.key})")
            elif handle.dialect.name in ("mysql", "mariadb"):
                handle.exec_driver_sql("SELECT GET_LOCK(%s, -1)", (self.name,))
        else:
            fcntl.flock(handle, fcntl.LOCK_EX)

    @staticmethod
    def _drop(handle: IO[str] | sqlalchemy.Connection) -> None:
        """Closing a file releases its lock; a server's lock goes with its session, so the
        connection is discarded, not returned to the pool."""
        if isinstance(handle, sqlalchemy.Connection):
            handle.invalidate()
        handle.close()

    def __enter__(self) -> StorageLock:
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


@functools.cache
def server_engine(url: str) -> sqlalchemy.Engine:
    """One small connection pool per database server URL, for the advisory locks."""
    return sqlalchemy.create_engine(url, pool_size=1, max_overflow=2, pool_pre_ping=True)
