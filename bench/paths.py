"""Where things live: cache and data folders, with their environment overrides."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    """``$BENCH_CACHE_DIR``, else ``$XDG_CACHE_HOME/captcha-bench``, else ``~/.cache/...``."""
    if env := os.environ.get("BENCH_CACHE_DIR"):
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "captcha-bench"


def data_dirs(data_dir: str | os.PathLike | None = None) -> list[Path]:
    """Folders searched for datasets, in order: ``data_dir``, ``$BENCH_DATA_DIR``, the cache."""
    dirs = [Path(d).expanduser() for d in (data_dir, os.environ.get("BENCH_DATA_DIR")) if d]
    return [*dirs, cache_dir()]
