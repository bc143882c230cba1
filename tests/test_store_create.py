"""Sweeps starting together on a new SQLite store: the schema is created once, no one dies.

Without the lock, three processes creating one new store at once die in MLflow's
migration (``table _alembic_tmp_runs already exists``) nearly every time on this machine.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

from mlflow import MlflowClient

from tuner.tracking.store import lock_path, sqlite_path

STARTERS = 3
#: Each process waits for the go file, so all three reach MLflow within milliseconds
SCRIPT = """
import sys, time
from pathlib import Path
from tuner.tracking.store import ensure_store
go = Path(sys.argv[2])
while not go.exists():
    time.sleep(0.005)
ensure_store(sys.argv[1])
from mlflow import MlflowClient
MlflowClient(tracking_uri=sys.argv[1]).create_experiment(sys.argv[3])
print("ready")
"""


def test_concurrent_first_use_creates_one_working_store(tmp_path: Path):
    uri = f"sqlite:///{tmp_path / 'new' / 'mlflow.db'}"
    go = tmp_path / "go"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, uri, str(go), f"sweep{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(STARTERS)
    ]
    time.sleep(3)  # every interpreter imported and waits at the barrier
    go.touch()
    outcomes = [p.communicate(timeout=120) for p in procs]
    for proc, (out, err) in zip(procs, outcomes, strict=True):
        assert proc.returncode == 0, err[-2000:]
        assert out.strip() == "ready"
    names = {e.name for e in MlflowClient(tracking_uri=uri).search_experiments()}
    assert names >= {f"sweep{i}" for i in range(STARTERS)}
    assert lock_path(tmp_path / "new" / "mlflow.db").exists()


def test_only_sqlite_uris_are_locked():
    assert sqlite_path("sqlite:////abs/results/mlflow.db") == Path("/abs/results/mlflow.db")
    assert sqlite_path("http://127.0.0.1:5000") is None
    assert sqlite_path("postgresql+psycopg2://postgres@127.0.0.1:5432/db") is None
    assert sqlite_path("sqlite:///:memory:") is None
