"""`make gpu-check` (.ci/gpu-check): its steps fit the 9 minutes, each is time-boxed, a failing
step does not stop the rest, and what must come back is packed into at most 8 files."""

from __future__ import annotations

import os
import re
import subprocess
import tarfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / ".ci" / "gpu-check"


def test_the_steps_are_time_boxed_inside_nine_minutes():
    """Each step's limit plus the grace a step that ignores SIGTERM gets (5 s) fits 9 minutes."""
    steps = re.findall(r"^step ([\w-]+) (\d+) ", SCRIPT.read_text(), flags=re.M)
    names = [name for name, _ in steps]
    assert names == [
        "cuda-tests",
        "perf",
        "perf-concurrency",
        "perf-ce-crnn-b64",
        "leaderboard",
        "report",
    ]
    assert sum(int(seconds) for _, seconds in steps) + 5 * len(steps) <= 9 * 60


def test_every_step_runs_and_the_results_are_packed(tmp_path):
    """With a stand-in interpreter that fails every command: each step still runs once, in order,
    and the packing leaves four archives."""
    calls = tmp_path / "calls.txt"
    fake = tmp_path / "python"
    fake.write_text(f'#!/bin/sh\necho "$@" >> {calls}\nexit 3\n')
    fake.chmod(0o755)
    out = tmp_path / "out"
    env = {**os.environ, "PYTHON": str(fake), "GPU_CHECK_WORK": str(tmp_path / "work")}
    done = subprocess.run(
        [str(SCRIPT), str(out)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    lines = calls.read_text().splitlines()
    assert lines[0].startswith("-m pytest") and "tests/test_graphs.py" in lines[0]
    assert [line.split()[2] for line in lines[1:]] == ["perf"] * 3 + ["run", "report"]
    assert "--suite leaderboard leaderboard-tuned --device cuda" in lines[4]
    packed = sorted(p.name for p in out.iterdir())
    assert packed == ["leaderboard.tar.gz", "logs.tar.gz", "perf.tar.gz", "store.tar.gz"]
    with tarfile.open(out / "logs.tar.gz") as logs:
        steps = logs.extractfile("./steps.log").read().decode()
    assert steps.count("exit 3") == 6
