"""Scale-out: workers sharing a suite through PostgreSQL (Optuna) and an MLflow server.

PostgreSQL is started by the tests on loopback (Debian's packages; CI installs them) and the
tests skip with the reason where it cannot start.
"""

from __future__ import annotations

import glob
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import mlflow
import optuna
import pytest
import sqlalchemy
from optuna.trial import TrialState

from bench.suite import load_suite
from bench.tune import StorageLock, counted
from tests.conftest import free_port, mlflow_server

ROOT = Path(__file__).resolve().parents[1]


def pg_binary(name: str) -> str | None:
    found = glob.glob(f"/usr/lib/postgresql/*/bin/{name}")
    return shutil.which(name) or (sorted(found)[-1] if found else None)


@pytest.fixture(scope="module")
def postgres() -> Iterator[str]:
    """A throw-away PostgreSQL cluster on 127.0.0.1; yields a SQLAlchemy URL without database."""
    initdb, pg_ctl = pg_binary("initdb"), pg_binary("pg_ctl")
    if not (initdb and pg_ctl):
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    base = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    as_user: list[str] = []
    if os.geteuid() == 0:  # postgres refuses to run as root
        if not shutil.which("runuser") or subprocess.run(["id", "postgres"]).returncode:
            pytest.skip("running as root without a postgres user to start PostgreSQL as")
        shutil.chown(base, "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    port = free_port()
    data = base / "data"
    try:
        subprocess.run(
            [*as_user, initdb, "-D", str(data), "-A", "trust", "-U", "bench"],
            check=True,
            capture_output=True,
        )
        subprocess.run(
            [
                *as_user,
                pg_ctl,
                "-D",
                str(data),
                "-l",
                str(base / "log"),
                "-o",
                f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c max_connections=200",
                "-w",
                "start",
            ],
            check=True,
            capture_output=True,
        )
    except (subprocess.CalledProcessError, OSError) as err:
        shutil.rmtree(base, ignore_errors=True)
        pytest.skip(f"PostgreSQL could not start: {err}")
    url = f"postgresql+psycopg2://bench@127.0.0.1:{port}"
    try:
        yield url
    finally:
        subprocess.run([*as_user, pg_ctl, "-D", str(data), "-m", "immediate", "stop"])
        shutil.rmtree(base, ignore_errors=True)


def database(server: str, name: str) -> str:
    engine = sqlalchemy.create_engine(f"{server}/postgres", isolation_level="AUTOCOMMIT")
    with engine.connect() as conn:
        conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}"')
        conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    engine.dispose()
    return f"{server}/{name}"


def worker(storage: str, tracking: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "bench", "run", "--suite", "smoke", "--storage", storage, "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={
            **os.environ,
            "PYTHONPATH": str(ROOT),
            "MLFLOW_TRACKING_URI": tracking,
            "OMP_NUM_THREADS": "1",
        },
    )


def check_done_once(storage: str, tracking: str) -> None:
    """Every trial and seed of the smoke suite finished exactly once, and the server has them."""
    suite = load_suite("smoke")
    client = mlflow.MlflowClient(tracking)
    experiment = client.get_experiment_by_name("smoke")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    for approach in suite.approaches:
        name = f"smoke/{suite.datasets[0]}/{approach}"
        tuning = optuna.load_study(study_name=name, storage=storage)
        assert sum(map(counted, tuning.trials)) == suite.trials
        final = optuna.load_study(study_name=f"{name}/final", storage=storage)
        done = Counter(t.user_attrs["seed"] for t in final.trials if t.state == TrialState.COMPLETE)
        assert done == dict.fromkeys(suite.seeds, 1)
        finished = Counter(
            r.data.tags["seed"]
            for r in runs
            if r.data.tags.get("kind") == "final"
            and r.data.tags["approach"] == approach
            and r.info.status == "FINISHED"
        )
        assert finished == {str(s): 1 for s in suite.seeds}
        trials = [
            r
            for r in runs
            if r.data.tags.get("optuna_study") == name and r.data.tags.get("kind") != "study"
        ]
        assert Counter(r.data.tags.get("trial_state") for r in trials)["complete"] == suite.trials


def test_three_workers_share_a_suite_and_do_everything_once(postgres, tmp_path):
    storage = database(postgres, "optuna3")
    with mlflow_server(database(postgres, "mlflow3"), tmp_path / "artifacts") as tracking:
        workers = [worker(storage, tracking) for _ in range(3)]
        outputs = [w.communicate(timeout=900)[0] for w in workers]
        assert [w.returncode for w in workers] == [0, 0, 0], outputs
        check_done_once(storage, tracking)
        logs = "".join(outputs)
        # every unit was done by some worker, none twice
        finished = [
            line.split(": ")[0]
            for line in logs.splitlines()
            if line.startswith("tune ") or (line.startswith("final ") and "test seq acc" in line)
        ]
        assert len(finished) == len(set(finished)) == 2 * (2 + 2)


def test_a_killed_workers_trial_is_picked_up_by_another(postgres, tmp_path, monkeypatch):
    storage = database(postgres, "optuna-kill")
    with mlflow_server(database(postgres, "mlflow-kill"), tmp_path / "artifacts") as tracking:
        victim = worker(storage, tracking)
        study = "smoke/synthetic:tiny,count=120/lstm-columns"
        deadline = time.monotonic() + 300
        client = mlflow.MlflowClient(tracking)
        while True:  # kill it (no chance to clean up) while its first trial's run is running
            assert victim.poll() is None and time.monotonic() < deadline
            running = client.search_runs(
                [e.experiment_id for e in client.search_experiments()],
                f"tags.optuna_trial = '{study}#0' and attributes.status = 'RUNNING'",
            )
            if running:
                victim.send_signal(signal.SIGKILL)
                victim.wait()
                break
            time.sleep(0.2)
        rescuer = worker(storage, tracking)
        out, _ = rescuer.communicate(timeout=900)
        assert rescuer.returncode == 0, out
        check_done_once(storage, tracking)
        trials = optuna.load_study(study_name=study, storage=storage).trials
        dead = [t for t in trials if t.state == TrialState.FAIL]
        assert len(dead) == 1
        retry = [t for t in trials if t.system_attrs.get("failed_trial") == dead[0].number]
        assert len(retry) == 1 and retry[0].state == TrialState.COMPLETE
        assert retry[0].params == dead[0].params
        killed = client.search_runs(
            [client.get_experiment_by_name("smoke").experiment_id],
            f"tags.optuna_trial = '{study}#{dead[0].number}'",
        )
        assert [r.info.status for r in killed] == ["FAILED"]
        assert "heartbeat" in killed[0].data.tags["error"]


@pytest.mark.parametrize("kind", ["file", "postgres"])
def test_a_lock_interrupted_as_it_is_granted_is_not_kept(kind, tmp_path, monkeypatch, request):
    # a kill arriving just after the lock was granted: the interrupted process's own next
    # acquire (its clean-up) waited for ever on the lost handle's lock
    url = (
        f"sqlite:///{tmp_path / 'optuna.db'}"
        if kind == "file"
        else database(request.getfixturevalue("postgres"), "interrupted")
    )
    granted = StorageLock._lock

    def granted_then_interrupted(self, handle):
        granted(self, handle)
        raise KeyboardInterrupt

    monkeypatch.setattr(StorageLock, "_lock", granted_then_interrupted)
    with pytest.raises(KeyboardInterrupt) as interrupted:  # its frames stay alive, as in a caller
        StorageLock(url).acquire()
    monkeypatch.setattr(StorageLock, "_lock", granted)
    again = threading.Thread(target=lambda: StorageLock(url).acquire().release(), daemon=True)
    again.start()
    again.join(timeout=20)
    assert not again.is_alive(), f"the lock stayed held after {interrupted.value!r}"


def test_the_advisory_lock_excludes_a_second_holder(postgres):
    url = database(postgres, "locks")
    first = StorageLock(url, "study-a").acquire()
    blocked = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys; from bench.tune import StorageLock; "
            "StorageLock(sys.argv[1], 'study-a').acquire(); print('got it')",
            url,
        ],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )
    time.sleep(3)
    assert blocked.poll() is None  # still waiting for the lock
    first.release()
    out, _ = blocked.communicate(timeout=60)
    assert "got it" in out
