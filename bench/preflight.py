"""Checks a command makes before any work: that its output paths, the cache, the MLflow store and
the Optuna storage can be written. Each failure is a ``ValueError`` naming the path or URL and
why, which the CLI prints as one ``error:`` line."""

from __future__ import annotations

import tempfile
from pathlib import Path

from bench.errors import first_line
from bench.paths import cache_dir


def folder_problem(folder: Path) -> str | None:
    """Why no file can be created in ``folder`` (made if missing), or None."""
    for parent in (folder, *folder.parents):  # a file where a folder should be
        if parent.exists() and not parent.is_dir():
            return f"{parent} is a file, not a folder"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".bench-check-"):
            pass
    except OSError as err:
        return err.strerror or str(err)
    return None


def writable_folder(folder: Path, what: str) -> None:
    """``folder`` exists or can be made, and a file can be created in it."""
    if problem := folder_problem(folder):
        raise ValueError(f"{what} {folder}: cannot write there ({problem})")


def writable_file(path: Path, what: str) -> None:
    """``path`` can be written: its folder is writable and it is not a folder itself."""
    if path.is_dir():
        raise ValueError(f"{what} {path}: is a folder, give a file name")
    if problem := folder_problem(path.parent):
        raise ValueError(f"{what} {path}: cannot write into {path.parent} ({problem})")


def writable_cache() -> None:
    writable_folder(cache_dir(), "cache (BENCH_CACHE_DIR)")


def reachable_tracking() -> None:
    """The MLflow store can be written (a SQLite file's folder), or answers (a server)."""
    from bench.tracking import tracking_uri
    from bench.tracking.query import check_store

    uri = tracking_uri()
    if uri.startswith("sqlite:///"):  # made on first use: a command that stops leaves none
        writable_file(Path(uri.removeprefix("sqlite:///")), "MLflow store (MLFLOW_TRACKING_URI)")
        return
    try:
        check_store(uri)
    except Exception as err:  # any failure to open the store stops the command before work
        raise ValueError(f"MLflow store {uri} (MLFLOW_TRACKING_URI): {first_line(err)}") from None


def reachable_storage(url: str) -> None:
    """The Optuna storage can be written (a file's folder), or opens (a database server)."""
    from bench.orchestration import open_storage
    from bench.orchestration.storage import storage_file

    if (local := storage_file(url)) is not None:  # made on first use: none left if stopped
        writable_file(local, "Optuna storage (--storage)")
        return
    try:
        open_storage(url)
    except Exception as err:  # a bad URL, a driver missing, a server that does not answer
        raise ValueError(f"Optuna storage {url} (--storage): {first_line(err)}") from None
