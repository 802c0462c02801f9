"""Shared fixtures: a private cache folder per test session, and small image folders."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image


@pytest.fixture(scope="session", autouse=True)
def bench_cache(tmp_path_factory) -> Path:
    """Every test session renders and decodes into its own cache, never the user's."""
    path = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("BENCH_CACHE_DIR", str(path))
        yield path


@pytest.fixture(scope="session")
def mlflow_template(tmp_path_factory) -> Path:
    """One migrated MLflow SQLite store per session (migrations take seconds); tests copy it."""
    import mlflow

    path = tmp_path_factory.mktemp("mlflow-template") / "mlflow.db"
    mlflow.MlflowClient(f"sqlite:///{path}").search_experiments()
    return path


@pytest.fixture(autouse=True)
def mlflow_store(mlflow_template, tmp_path, monkeypatch) -> str:
    """Each test runs in its own folder with its own copy of the store, never in the repo."""
    work = tmp_path / ".work"  # hidden: tests use tmp_path itself as an image folder
    work.mkdir()
    monkeypatch.chdir(work)
    db = work / "mlflow.db"
    shutil.copy(mlflow_template, db)
    uri = f"sqlite:///{db}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.delenv("BENCH_OPTUNA_STORAGE", raising=False)
    return uri


@pytest.fixture
def captcha_v2_root() -> Path:
    """The sources' dataset through BENCH_DATA_DIR (CI points it at ../shared/datasets)."""
    env = os.environ.get("BENCH_DATA_DIR")
    folder = Path(env) / "captcha_images_v2" if env else None
    if folder is None or not folder.is_dir():
        pytest.skip(
            "captcha-v2 is not available: set BENCH_DATA_DIR to a folder holding captcha_images_v2/"
        )
    return folder


def write_images(folder: Path, labels: list[str], size: tuple[int, int] = (40, 16)) -> list[Path]:
    """PNG files named <label>.png with random pixels."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    paths = []
    for label in labels:
        path = folder / f"{label}.png"
        Image.fromarray(rng.integers(0, 255, (size[1], size[0], 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return paths


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def mlflow_server(backend_uri: str, artifacts: Path | None = None) -> Iterator[str]:
    """``mlflow server`` on a free loopback port; yields its URL once ``/health`` answers."""
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    extra = ["--artifacts-destination", str(artifacts)] if artifacts else []
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlflow",
            "server",
            "--backend-store-uri",
            backend_uri,
            *extra,
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                urllib.request.urlopen(base + "/health", timeout=2)
                break
            except (urllib.error.URLError, ConnectionError):
                assert server.poll() is None, "mlflow server exited"
                assert time.monotonic() < deadline, "mlflow server did not start in 120 s"
                time.sleep(0.5)
        yield base
    finally:
        server.terminate()
        server.wait(timeout=30)


def fit(approach, dataset, overrides=None, seed=0, device="auto", graphs="auto", **kwargs):
    """``bench.train.train`` of a spec made from an approach name and overrides."""
    from bench.spec import RunOptions, make_spec
    from bench.train import train

    options = RunOptions(device=device, graphs=graphs)
    return train(
        make_spec(approach, dataset, overrides, seed=seed, options=options), dataset, **kwargs
    )


def fit_tracked(approach, dataset, overrides=None, seed=0, device="auto", **kwargs):
    """``bench.tracked.train_tracked`` of a spec made from an approach name and overrides."""
    from bench.spec import RunOptions, make_spec
    from bench.tracked import train_tracked

    spec = make_spec(approach, dataset, overrides, seed=seed, options=RunOptions(device=device))
    return train_tracked(spec, dataset, **kwargs)
