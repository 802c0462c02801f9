"""The package installed as users get it (not editable): it finds its suites from any folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SKIP = shutil.ignore_patterns(".*", "scratch", "site", "build", "reports", "*.egg-info")


def test_a_non_editable_install_runs_a_shipped_suite_from_an_empty_folder(tmp_path):
    source = tmp_path / "source"
    shutil.copytree(REPO, source, symlinks=True, ignore=SKIP)
    site = tmp_path / "site"
    pip = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--no-build-isolation"]
    subprocess.run(
        [*pip, "--target", str(site), str(source)],
        check=True,
        capture_output=True,
    )
    assert sorted(p.name for p in (site / "bench" / "suites").iterdir()) == sorted(
        p.name for p in (REPO / "experiments").glob("*.yaml")
    )  # the suite files ship, the research scripts beside them do not
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_EXPERIMENT")}
    env["PYTHONPATH"] = str(site)  # ahead of this checkout's editable install
    out = subprocess.run(
        [sys.executable, "-m", "bench", "run", "--suite", "smoke", "--plan", "--device", "cpu"],
        cwd=empty,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr
    assert f"suite smoke ({site / 'bench' / 'suites' / 'smoke.yaml'})" in out.stdout
    assert "plan of suite smoke" in out.stdout and not list(empty.iterdir())
