"""Worker processes: how many (``--workers auto``) and on which GPU each one runs."""

import os

import pytest

from bench.orchestration.workers import (
    auto_workers,
    parse_workers,
    worker_processes,
    workers_per_gpu,
)


def test_workers_per_gpu_fit_the_smallest_free_memory_and_stay_between_1_and_8():
    # each worker: a 600 MB context plus twice the probed step's peak
    assert workers_per_gpu([80_000], 1_000) == 8  # 30 would fit
    assert workers_per_gpu([80_000, 20_000], 2_000) == 4  # 20000 // 4600
    assert workers_per_gpu([3_000], 5_000) == 1  # none fits: one still runs


def test_workers_are_a_positive_count_or_auto():
    assert parse_workers("3") == 3 and parse_workers("auto") == "auto"
    for bad in ("0", "-2", "many"):
        with pytest.raises(ValueError, match=f"--workers {bad}"):
            parse_workers(bad)


def test_auto_without_cuda_is_one_process():
    assert auto_workers(None) == (1, [])


def write_visible_device(folder: str) -> None:
    with open(os.path.join(folder, str(os.getpid())), "w") as out:
        out.write(os.environ.get("CUDA_VISIBLE_DEVICES", "unset"))


def test_each_extra_worker_sees_its_own_gpu(tmp_path, monkeypatch):
    """Round-robin over the GPUs listed, this process being worker 0; its own environment is
    left as it was."""
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    folder = tmp_path / "seen"
    folder.mkdir()
    with worker_processes(write_visible_device, (str(folder),), 3, gpus=["0", "1", "0", "1"]):
        pass
    seen = sorted(p.read_text() for p in folder.iterdir())
    assert seen == ["0", "1", "1"]
    assert "CUDA_VISIBLE_DEVICES" not in os.environ


def train_until_interrupted(folder: str) -> None:
    """A worker that works until interrupted, then says so (as a run ends KILLED)."""
    import time

    path = os.path.join(folder, str(os.getpid()))
    try:
        with open(path, "w") as out:
            out.write("working")
        while True:
            time.sleep(0.1)
    except KeyboardInterrupt:
        with open(path, "w") as out:
            out.write("interrupted")


def test_a_kill_of_the_first_worker_interrupts_the_others(tmp_path, monkeypatch):
    """A kill (SIGTERM, raised as KeyboardInterrupt) reaches only the process it names: the
    others, still working after the grace, are interrupted the same way instead of working on."""
    from bench.orchestration import workers

    monkeypatch.setattr(workers, "INTERRUPT_GRACE_S", 1.0)
    folder = tmp_path / "seen"
    folder.mkdir()
    with (
        pytest.raises(KeyboardInterrupt),
        worker_processes(train_until_interrupted, (str(folder),), 2),
    ):
        import time

        started = time.monotonic()  # wait until both workers are working (spawned: they import)
        while len(list(folder.iterdir())) < 2 and time.monotonic() - started < 120:
            time.sleep(0.2)
        raise KeyboardInterrupt
    assert sorted(p.read_text() for p in folder.iterdir()) == ["interrupted"] * 2
