"""Sweeps starting together on a new SQLite store: the schema is created once, no one dies.

Without the lock, three processes creating one new store at once die in MLflow's
migration (``table _alembic_tmp_runs already exists``) nearly every time on this machine.
A new store is a copy of a template MLflow migrated once (``tuner.tracking.store``): these
tests check that the copy is a store MLflow accepts as its own, with its own Default
experiment, and that a machine without a writable cache still gets a migrated store.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

from mlflow import MlflowClient

from tuner.tracking.store import CACHE_ENV, ensure_store, lock_path, sqlite_path, template_path

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
    env = {**os.environ, CACHE_ENV: str(tmp_path / "cache")}  # the template too is new
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", SCRIPT, uri, str(go), f"sweep{i}"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
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
    assert len(list((tmp_path / "cache").glob("mlflow-*-empty.db"))) == 1


def _schema(db: Path) -> tuple[list[str], dict[str, list[str]], set[str]]:
    """(alembic revision, table → its columns, index names): the schema as MLflow uses it.
    Not the DDL text: MLflow's SQLite migrations rebuild tables through batch copies whose
    constraint order varies from one process to the next."""
    with sqlite3.connect(db) as conn:
        version = [v for (v,) in conn.execute("SELECT version_num FROM alembic_version")]
        names = [n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")]
        tables = {}
        for name in names:
            tables[name] = sorted(r[1] for r in conn.execute(f'PRAGMA table_info("{name}")'))
        indexes = {
            n for (n,) in conn.execute("SELECT name FROM sqlite_master WHERE type = 'index'")
        }
    return version, tables, indexes


def test_a_store_from_the_template_is_mlflows_own_with_its_own_default_experiment(
    tmp_path: Path, monkeypatch
):
    monkeypatch.setenv(CACHE_ENV, str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)
    first, second = tmp_path / "a" / "mlflow.db", tmp_path / "b" / "mlflow.db"
    ensure_store(f"sqlite:///{first}")
    template = template_path()
    built = template.stat().st_mtime_ns
    ensure_store(f"sqlite:///{second}")
    assert template.stat().st_mtime_ns == built, "the template is built once, then copied"
    reference = tmp_path / "direct.db"  # what MLflow itself makes of a new file
    MlflowClient(tracking_uri=f"sqlite:///{reference}").search_experiments()
    assert _schema(second) == _schema(reference)
    with sqlite3.connect(template) as conn:
        assert conn.execute("SELECT count(*) FROM experiments").fetchone() == (0,)
    client = MlflowClient(tracking_uri=f"sqlite:///{second}")
    default = client.get_experiment("0")
    assert default.name == "Default"
    assert default.artifact_location == str(tmp_path / "mlruns" / "0")
    run = client.create_run(client.create_experiment("x"))
    client.log_metric(run.info.run_id, "val/acc", 0.5, step=1)
    assert client.get_run(run.info.run_id).data.metrics == {"val/acc": 0.5}
    assert MlflowClient(tracking_uri=f"sqlite:///{first}").search_experiments()[0].name == "Default"


def test_without_a_writable_cache_the_store_is_migrated_in_place(tmp_path: Path, monkeypatch):
    blocked = tmp_path / "not-a-folder"
    blocked.write_text("")
    monkeypatch.setenv(CACHE_ENV, str(blocked))
    db = tmp_path / "store" / "mlflow.db"
    ensure_store(f"sqlite:///{db}")
    assert _schema(db)[0] and not list(db.parent.glob("*.new"))
    assert MlflowClient(tracking_uri=f"sqlite:///{db}").get_experiment("0").name == "Default"


def test_only_sqlite_uris_are_locked():
    assert sqlite_path("sqlite:////abs/results/mlflow.db") == Path("/abs/results/mlflow.db")
    assert sqlite_path("http://127.0.0.1:5000") is None
    assert sqlite_path("postgresql+psycopg2://postgres@127.0.0.1:5432/db") is None
    assert sqlite_path("sqlite:///:memory:") is None
