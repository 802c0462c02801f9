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
    """``bench.training.train`` of a spec made from an approach name and overrides."""
    from bench.spec import make_spec
    from bench.training import train

    return train(
        make_spec(approach, dataset, overrides, seed=seed, device=device, graphs=graphs),
        dataset,
        **kwargs,
    )


def fit_tracked(approach, dataset, overrides=None, seed=0, device="auto", **kwargs):
    """``train_tracked`` of a spec made from an approach name and overrides."""
    from bench.spec import make_spec
    from bench.tracking.record import train_tracked

    spec = make_spec(approach, dataset, overrides, seed=seed, device=device)
    return train_tracked(spec, dataset, **kwargs)


class StandInGraph:
    """A CPU stand-in for ``torch.cuda.CUDAGraph``: capture records the step; ``replay`` runs it
    eagerly and writes its loss into the captured output tensor, as a replay overwrites it."""

    def __init__(self) -> None:
        self.generators: list = []
        self.step = None
        self.out = None
        self.replays = 0

    def register_generator_state(self, generator) -> None:
        import torch

        if not isinstance(generator, torch.Generator):  # torch's own refuses anything else
            raise TypeError(f"register_generator_state needs a torch.Generator, got {generator!r}")
        self.generators.append(generator)

    def replay(self) -> None:
        self.out.copy_(self.step().detach())
        self.replays += 1


class StandInCapture:
    """``bench.training.graphs.CAPTURE`` for the CPU tests: steps on any device "capture" into
    :class:`StandInGraph`; with ``fail``, recording draws from the generators (as a capture
    that dies midway leaves them) and raises ``RuntimeError(fail)``."""

    def __init__(self, fail: str | None = None) -> None:
        self.fail = fail
        self.graphs: list[StandInGraph] = []

    def captures(self, device) -> bool:
        return True

    def make_capturable(self, optimizer, device) -> None:
        pass  # torch's capturable optimizers run on CUDA only

    def graph(self) -> StandInGraph:
        self.graphs.append(StandInGraph())
        return self.graphs[-1]

    def record(self, graph: StandInGraph, step):
        import torch

        if self.fail:
            for generator in (torch.default_generator, *graph.generators):
                torch.rand(3, generator=generator)
            raise RuntimeError(self.fail)
        graph.step, graph.out = step, torch.zeros(())
        return graph.out

    def side_stream(self):
        return contextlib.nullcontext()

    def default_generator(self, device):
        import torch

        return torch.default_generator

    def save(self, generator):
        return generator.get_state()

    def restore(self, generator, state) -> None:
        generator.set_state(state)


@pytest.fixture
def stand_in_capture(monkeypatch) -> StandInCapture:
    """CUDA-graph capture simulated on CPU (``bench.training.graphs.CAPTURE`` replaced)."""
    from bench.training import graphs

    capture = StandInCapture()
    monkeypatch.setattr(graphs, "CAPTURE", capture)
    return capture
