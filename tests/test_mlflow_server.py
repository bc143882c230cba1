"""The production tracking setup for real: ``mlflow server`` on PostgreSQL, proxied artifacts.

A fresh database per test run on the machine's PostgreSQL (127.0.0.1:5432), an
``mlflow server --serve-artifacts`` on 127.0.0.1 with ``--allowed-hosts``, a mini sweep
that logs only through the server's tracking URI, and the leaderboard read back through
the server. SQLite stays the embedded default; this is what a cluster runs.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import pandas as pd
import psycopg2
import pytest
import ray
from conftest import free_port
from mlflow.tracking import MlflowClient
from rich.console import Console

from tuner.config import parse_config
from tuner.leaderboard import build
from tuner.pipeline import run_pipeline
from tuner.tracking import TrackingService

BIN = Path(sys.executable).parent
PG = {"host": "127.0.0.1", "port": 5432, "user": "postgres", "dbname": "postgres"}
TASKS, METHODS = ["synth/count"], ["linear", "bitfit"]


def _admin(sql: str) -> None:
    conn = psycopg2.connect(**PG)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
    finally:
        conn.close()


def _get(url: str, host: str | None = None) -> int:
    request = urllib.request.Request(url, headers={"Host": host} if host else {})
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code
    except urllib.error.URLError:
        return 0  # not listening (yet)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    try:
        _admin("SELECT 1")
    except psycopg2.OperationalError as err:
        pytest.fail(f"PostgreSQL on 127.0.0.1:5432 is required for this test: {err}")
    database = f"petl_sweep_test_{uuid.uuid4().hex[:10]}"
    _admin(f"CREATE DATABASE {database}")
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    cmd = [
        str(BIN / "mlflow"),
        "server",
        "--backend-store-uri",
        f"postgresql+psycopg2://postgres@127.0.0.1:5432/{database}",
        "--serve-artifacts",
        "--artifacts-destination",
        str(root / "artifacts"),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--allowed-hosts",
        f"127.0.0.1:{port},localhost:{port}",
    ]
    log = open(root / "server.log", "w")  # noqa: SIM115 - closed in the finally below
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 180
        while _get(f"{url}/health") != 200:
            if proc.poll() is not None or time.time() > deadline:
                pytest.fail(f"mlflow server did not start:\n{(root / 'server.log').read_text()}")
            time.sleep(1)
        yield {"url": url, "port": port, "root": root, "database": database}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        _admin(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


@pytest.fixture(scope="module")
def swept(server, tmp_path_factory):
    root = tmp_path_factory.mktemp("server-sweep")
    cfg = parse_config(
        {
            "name": "server-sweep",
            "tasks": TASKS,
            "methods": METHODS,
            "data_root": str(root / "data"),
            "out_dir": str(root / "results"),
            "tune": {"num_samples": 2, "max_epochs": 2, "grace_period": 1},
            "final": {"seeds": 1},
            "tracking": {"uri": server["url"]},
            "ray": {"num_cpus": 2},
        }
    )
    with open(root / "console.txt", "w") as log:
        run_pipeline(cfg, Console(file=log, width=200), live=False)
    ray.shutdown()
    return cfg, root


def test_runs_live_in_postgres_and_artifacts_behind_the_server(server, swept):
    cfg, root = swept
    assert not (root / "results" / "mlflow.db").exists(), "nothing may fall back to SQLite"
    runs = TrackingService(server["url"], cfg.experiment, create=False).search()
    finals = [r for r in runs if r["tags"].get("stage") == "final"]
    assert sorted(r["tags"]["method"] for r in finals) == sorted(METHODS)
    conn = psycopg2.connect(**{**PG, "dbname": server["database"]})
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM runs")
            assert cur.fetchone()[0] == len(runs)
    finally:
        conn.close()
    client = MlflowClient(tracking_uri=server["url"])
    run = client.get_run(finals[0]["run_id"])
    assert run.info.artifact_uri.startswith("mlflow-artifacts:")
    local = client.download_artifacts(run.info.run_id, "trainable.safetensors", str(root))
    assert Path(local).stat().st_size > 0
    stored = list((server["root"] / "artifacts").rglob("trainable.safetensors"))
    assert len(stored) == len(finals), "artifacts are stored by the server, not the client"


def test_leaderboard_reads_back_through_the_server(server, swept):
    cfg, root = swept
    paths, _ = build(server["url"], [cfg.experiment], root / "board", "via server")
    summary = pd.read_parquet(paths["summary"])
    assert sorted(summary["method"]) == sorted(METHODS)
    assert summary["task"].eq(TASKS[0]).all()
    text = paths["markdown"].read_text()
    assert all(method in text for method in METHODS)


def test_allowed_hosts_rejects_unknown_host_headers(server):
    api = f"{server['url']}/api/2.0/mlflow/experiments/search?max_results=1"
    assert _get(api) == 200
    assert _get(api, host="evil.example:5000") == 403


def test_postgres_client_is_installed_for_the_server_extra():
    assert shutil.which("mlflow", path=str(BIN)) is not None
    assert psycopg2.__version__.startswith("2.9.13")
