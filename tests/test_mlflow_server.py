"""The production tracking setup for real: ``mlflow server`` on PostgreSQL, proxied artifacts.

A fresh database per test run on the machine's PostgreSQL (127.0.0.1:5432), an
``mlflow server --serve-artifacts`` on 127.0.0.1 with ``--allowed-hosts``, a mini sweep
that logs only through the server's tracking URI, and the leaderboard read back through
the server. SQLite stays the embedded default; this is what a cluster runs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
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
from _sweep_helpers import local_ray, recorded_table
from conftest import free_port
from mlflow.tracking import MlflowClient
from rich.console import Console

from tuner.config import parse_config
from tuner.leaderboard.build import build
from tuner.sweep.pipeline import run_pipeline
from tuner.tracking.client import TrackingService
from tuner.tracking.names import PARENT_RUN_TAG

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
    url = f"http://127.0.0.1:{port}"
    procs = []

    def start() -> None:
        # its own process group: mlflow server forks uvicorn workers, and a worker that
        # outlives its parent would keep answering on the port (an outage that never happens)
        procs.append(
            subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        )
        deadline = time.time() + 180
        while _get(f"{url}/health") != 200:
            if procs[-1].poll() is not None or time.time() > deadline:
                pytest.fail(f"mlflow server did not start:\n{(root / 'server.log').read_text()}")
            time.sleep(1)

    def stop() -> None:
        group = procs[-1].pid
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGTERM)
        with contextlib.suppress(subprocess.TimeoutExpired):
            procs[-1].wait(timeout=30)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(group, signal.SIGKILL)  # workers too, whatever the parent did
        deadline = time.time() + 30
        while _get(f"{url}/health") != 0:
            assert time.time() < deadline, "the MLflow server still answers after being killed"
            time.sleep(0.5)

    try:
        start()
        yield {
            "url": url, "port": port, "root": root, "database": database,
            "start": start, "stop": stop,
        }  # fmt: skip
    finally:
        stop()
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
            # the sweep's lease run is deleted when released: MLflow keeps it, as deleted
            cur.execute("SELECT count(*) FROM runs WHERE lifecycle_stage = 'active'")
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


def test_an_outage_longer_than_mlflows_retries_loses_nothing(server, tmp_path):
    """Stop the server mid-sweep for longer than MLflow's own retry budget (shortened here
    to none): the sweep buffers, says so, flushes when the server is back, exits 0, and
    every run, metric step, final run and the leaderboard are there.

    The sweep replays a recorded table (1.5 s an epoch): what the outage tests is the
    tracker's buffering and journal, which a trained trial reaches the same way."""

    import yaml

    table = recorded_table(tmp_path / "recorded.csv", [(TASKS[0], m) for m in METHODS])
    sweep = {
        "name": "outage", "tasks": TASKS, "methods": METHODS,
        "out_dir": str(tmp_path / "results"), "replay": {"table": table, "epoch_s": 1.5},
        "tune": {"num_samples": 2, "max_epochs": 3, "grace_period": 3},
        "final": {"seeds": 1}, "tracking": {"uri": server["url"]}, "ray": {"num_cpus": 2},
    }  # fmt: skip
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    env = {**os.environ, "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0", "MLFLOW_HTTP_REQUEST_TIMEOUT": "5"}
    job = subprocess.Popen(
        [str(BIN / "petl-sweep"), "run", str(tmp_path / "sweep.yaml"), "--no-progress"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    client = MlflowClient(tracking_uri=server["url"])
    deadline = time.time() + 600
    while True:  # wait for the first trial to log an epoch, then pull the plug
        assert job.poll() is None and time.time() < deadline, "the sweep never reached a trial"
        experiment = client.get_experiment_by_name("outage")
        if experiment and any(
            "val/acc" in r.data.metrics for r in client.search_runs([experiment.experiment_id])
        ):
            break
        time.sleep(1)
    server["stop"]()
    journal = tmp_path / "results" / ".tracking-journal" / "outage" / "journal.jsonl"
    down_since = time.time()
    while not journal.exists() or time.time() - down_since < 12:  # writes are buffered
        assert time.time() - down_since < 300, "no write was buffered during the outage"
        time.sleep(0.5)
    server["start"]()
    output, _ = job.communicate(timeout=900)
    (tmp_path / "job.log").write_text(output)
    assert job.returncode == 0, output[-3000:]
    runs = TrackingService(server["url"], "outage", create=False).search()
    assert not [r for r in runs if r["status"] == "RUNNING"]
    trials = [r for r in runs if PARENT_RUN_TAG in r["tags"]]
    assert len(trials) == 2 * len(METHODS)
    for trial in trials:
        steps = {m.step for m in client.get_metric_history(trial["run_id"], "val/acc")}
        assert steps == {1, 2, 3}, steps
    assert len([r for r in runs if r["tags"].get("stage") == "final"]) == len(METHODS)
    assert [r["tags"].get("stage") for r in runs].count("leaderboard") == 1
    assert "MLflow is unreachable" in output and "reachable again" in output, output[-3000:]


def _post(url: str, body: dict, auth: tuple[str, str] | None = None) -> int:
    import base64
    import json

    headers = {"Content-Type": "application/json"}
    if auth:
        headers["Authorization"] = "Basic " + base64.b64encode(":".join(auth).encode()).decode()
    request = urllib.request.Request(url, json.dumps(body).encode(), headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return response.status
    except urllib.error.HTTPError as err:
        return err.code


def test_basic_auth_server_as_shipped(tmp_path, monkeypatch):
    """The server as docker/ and cluster/ run it: `--app-name basic-auth` with the shipped
    auth settings, every secret in the environment. Anonymous writes get 401, the health
    probe stays open, the sweep's tracker logs with MLFLOW_TRACKING_USERNAME/PASSWORD, wrong
    credentials fail before the sweep with one clear line, and no process's command line
    holds a password."""
    import configparser

    import psutil

    from tuner.tracking.buffered import TrackingError
    from tuner.tracking.client import check_access

    database = f"petl_sweep_auth_{uuid.uuid4().hex[:10]}"
    _admin(f"CREATE DATABASE {database}")
    shipped = configparser.ConfigParser()
    shipped.read(Path(__file__).resolve().parent.parent / "docker" / "mlflow-auth.ini")
    shipped["mlflow"]["database_uri"] = f"sqlite:///{tmp_path / 'basic_auth.db'}"  # not /mlauth
    with open(tmp_path / "auth.ini", "w") as f:
        shipped.write(f)
    db_secret, admin_secret = f"dbpw{uuid.uuid4().hex}", f"adminpw{uuid.uuid4().hex}"
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,  # trust auth on 127.0.0.1 accepts any password: it only has to travel
        "MLFLOW_BACKEND_STORE_URI": f"postgresql+psycopg2://postgres:{db_secret}@127.0.0.1:5432/{database}",
        "MLFLOW_AUTH_CONFIG_PATH": str(tmp_path / "auth.ini"),
        "MLFLOW_AUTH_ADMIN_USERNAME": "admin", "MLFLOW_AUTH_ADMIN_PASSWORD": admin_secret,
        "MLFLOW_FLASK_SERVER_SECRET_KEY": uuid.uuid4().hex,
        "MLFLOW_ARTIFACTS_DESTINATION": str(tmp_path / "artifacts"),
        "MLFLOW_HOST": "127.0.0.1", "MLFLOW_PORT": str(port), "MLFLOW_WORKERS": "1",
        "MLFLOW_SERVER_ALLOWED_HOSTS": f"127.0.0.1:{port}",
    }  # fmt: skip
    proc = subprocess.Popen(
        [str(BIN / "mlflow"), "server", "--app-name", "basic-auth", "--serve-artifacts"],
        env=env, stdout=open(tmp_path / "server.log", "w"), stderr=subprocess.STDOUT,  # noqa: SIM115
        start_new_session=True, cwd=tmp_path,
    )  # fmt: skip
    try:
        deadline = time.time() + 180
        while _get(f"{url}/health") != 200:
            assert proc.poll() is None and time.time() < deadline, (
                tmp_path / "server.log"
            ).read_text()
            time.sleep(1)
        create = f"{url}/api/2.0/mlflow/experiments/create"
        assert _post(create, {"name": "anon"}) == 401
        assert _post(create, {"name": "wrong"}, ("admin", "not-it")) == 401
        for p in psutil.process_iter(["cmdline"]):
            words = " ".join(p.info["cmdline"] or [])
            assert db_secret not in words and admin_secret not in words, words[:200]

        monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
        monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
        with pytest.raises(
            TrackingError, match="401: it requires sign-in: set MLFLOW_TRACKING_USERNAME"
        ):
            check_access(url)
        monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "admin")
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "not-it")
        with pytest.raises(TrackingError, match="credentials of user 'admin'"):
            check_access(url)
        monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", admin_secret)
        check_access(url)
        tracker = TrackingService(url, "auth-sweep")
        tracker.start_run("t", "trial", {"stage": "tune"})
        tracker.log_metrics("t", {"val/acc": 0.5}, 1)
        tracker.log_artifact_bytes("t", "x.txt", b"artifact through the proxy")
        tracker.end_run("t", "FINISHED", None)
        (run,) = tracker.search()
        assert run["status"] == "FINISHED" and run["metrics"]["val/acc"] == 0.5
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
        _admin(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")


def _load_bench():
    """``bench/tracking_load.py`` as a module (bench/ is scripts, not a package)."""
    import importlib.util

    spec = importlib.util.spec_from_file_location(
        "tracking_load", Path(__file__).resolve().parent.parent / "bench" / "tracking_load.py"
    )
    bench = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(bench)
    return bench


def test_32_concurrent_trials_lose_no_write(server, tmp_path):
    """32 trials (1/16 CPU each) log at once through the sweep's tracker actor to the
    PostgreSQL-backed server: every run FINISHED, every metric step and artifact there, and
    the per-call latency is measured (bench/tracking_load.py prints the same at full size)."""
    bench = _load_bench()
    with local_ray(num_cpus=2):
        figures = bench.run_load(server["url"], tmp_path, trials=32, epochs=4)
    (tmp_path / "load.json").write_text(str(figures))
    assert figures["lost"] == {"runs": 0, "unfinished": 0, "metric_steps": 0, "artifacts": 0}
    assert figures["journal_left"] == 0 and figures["outages"] == 0
    latency = figures["latency_ms"]
    assert latency["log_metrics"]["n"] == 32 * 4 and latency["start_run"]["n"] == 32
    for op, row in latency.items():
        assert 0 < row["p50"] <= row["p95"] <= row["max"], (op, row)
    print(f"tracker call latency under 32 concurrent trials (ms): {latency}")


def test_trials_at_a_steady_rate_lose_no_write(server, tmp_path):
    """The load bench's rate mode, small: 16 trials (threads) reporting 2 epochs/s for 3 s
    through the sweep's tracker actor; every write is read back from the server, and the
    tracker merged the epochs (fewer log_batch requests than epochs reported)."""
    bench = _load_bench()
    with local_ray(num_cpus=2):
        figures = bench.run_rate(server["url"], tmp_path, 16, 3.0, 2.0, flush_every=1.0)
    assert figures["lost"] == {"runs": 0, "unfinished": 0, "metric_steps": 0, "artifacts": 0}
    assert figures["journal_left"] == 0 and figures["outages"] == 0
    assert figures["latency_ms"]["log_metrics"]["n"] == 16 * 6
    assert figures["mlflow_requests"]["log_batch"] < 16 * 6 + 16  # epochs + params, merged
