"""Many trials logging at once through the sweep's tracker to an MLflow server on PostgreSQL.

A cluster sweep runs dozens of trials at a time, and every epoch of each one is an MLflow
write through the sweep's one tracker actor. This starts ``--trials`` Ray tasks at once (a
fractional CPU each, as trials packed on a node are), each a trial's worth of tracking:
start a nested run under a study parent, log params, ``--epochs`` × (train/val loss and
accuracy, lr, epoch time), an artifact, end the run. It times every call as the trial sees
it (the actor round trip, MLflow included), then reads everything back from the server and
counts what is missing: runs not FINISHED, metric steps absent, artifacts absent.

Usage (PostgreSQL on 127.0.0.1:5432, trust auth; the script starts and stops its server):
``python bench/tracking_load.py [--trials 32 --epochs 20] [--url http://...]`` prints the
latency table and writes ``bench/tracking_load.json``. The CI test
``tests/test_mlflow_server.py::test_32_concurrent_trials_lose_no_write`` calls ``run_load``
on the test server.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import ray

from tuner.config import parse_config
from tuner.sweep.orchestrate import start_tracker
from tuner.tracking.names import PARENT_RUN_TAG

METRICS = ("train/loss", "train/acc", "val/loss", "val/acc", "lr", "epoch_time_s")


def trial(tracker: Any, index: int, epochs: int) -> list[tuple[str, float]]:
    """One trial's tracking calls; returns (call, seconds) for each."""
    timings = []

    def call(name: str, ref: Any) -> None:
        start = time.perf_counter()
        ray.get(ref)
        timings.append((name, time.perf_counter() - start))

    key = f"trial-{index}"
    call("start_run", tracker.start_run.remote(key, key, {"stage": "tune"}, parent="study"))
    call("log_params", tracker.log_params.remote(key, {"lr": 1e-3 * (index + 1), "wd": 1e-4}))
    rng = np.random.default_rng(index)
    for epoch in range(1, epochs + 1):
        values = {m: float(v) for m, v in zip(METRICS, rng.random(len(METRICS)), strict=True)}
        call("log_metrics", tracker.log_metrics.remote(key, values, epoch))
    call("artifact", tracker.log_artifact_bytes.remote(key, "result.json", b'{"ok": true}'))
    call("end_run", tracker.end_run.remote(key, "FINISHED"))
    return timings


def run_load(url: str, out_dir: Path, trials: int = 32, epochs: int = 20) -> dict[str, Any]:
    """Run the load against ``url`` (Ray must be up with ≥ 1 CPU); return the figures."""
    name = f"load-{uuid.uuid4().hex[:8]}"
    cfg = parse_config(
        {
            "name": name, "tasks": ["synth/count"], "methods": ["linear"],
            "out_dir": str(out_dir), "tracking": {"uri": url},
        }
    )  # fmt: skip
    tracker = start_tracker(cfg)
    ray.get(tracker.start_run.remote("study", "study", {"stage": "tune"}))
    parent = ray.get(tracker.run_id.remote("study"))
    cpus = ray.cluster_resources().get("CPU", 1)
    task = ray.remote(num_cpus=min(1.0, cpus / trials))(trial)
    start = time.perf_counter()
    results = ray.get([task.remote(tracker, i, epochs) for i in range(trials)])
    wall = time.perf_counter() - start
    ray.get(tracker.end_run.remote("study", "FINISHED"))
    ray.get(tracker.close.remote())
    status = ray.get(tracker.status.remote())
    ray.kill(tracker)

    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name(name)
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    children = [r for r in runs if r.data.tags.get(PARENT_RUN_TAG) == parent]
    lost = {"runs": trials - len(children), "unfinished": 0, "metric_steps": 0, "artifacts": 0}
    for run in children:
        lost["unfinished"] += run.info.status != "FINISHED"
        for metric in METRICS:
            steps = {m.step for m in client.get_metric_history(run.info.run_id, metric)}
            lost["metric_steps"] += len(set(range(1, epochs + 1)) - steps)
        lost["artifacts"] += not client.list_artifacts(run.info.run_id)
    latency = {}
    calls = [c for timings in results for c in timings]
    for op in sorted({op for op, _ in calls}):
        ms = np.array([s for o, s in calls if o == op]) * 1000
        latency[op] = {
            "n": int(ms.size),
            **{q: round(float(np.percentile(ms, p)), 1) for q, p in (("p50", 50), ("p95", 95))},
            "max": round(float(ms.max()), 1),
        }
    writes = len(calls)
    return {
        "trials": trials, "epochs": epochs, "writes": writes, "wall_s": round(wall, 2),
        "writes_per_s": round(writes / wall, 1), "latency_ms": latency, "lost": lost,
        "journal_left": status["pending"], "outages": status["outages"],
    }  # fmt: skip


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _admin(sql: str) -> None:
    import psycopg2

    conn = psycopg2.connect(host="127.0.0.1", port=5432, user="postgres", dbname="postgres")
    conn.autocommit = True
    try:
        conn.cursor().execute(sql)
    finally:
        conn.close()


def _serve(root: Path) -> tuple[str, subprocess.Popen, str]:
    """An MLflow server on a fresh PostgreSQL database, as the cluster runs it (1 worker)."""
    database = f"petl_sweep_bench_{uuid.uuid4().hex[:10]}"
    _admin(f"CREATE DATABASE {database}")
    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    env = {
        **os.environ,
        "MLFLOW_BACKEND_STORE_URI": f"postgresql+psycopg2://postgres@127.0.0.1:5432/{database}",
    }
    cmd = [
        str(Path(sys.executable).parent / "mlflow"), "server", "--serve-artifacts",
        "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1",
        "--port", str(port), "--workers", "1", "--allowed-hosts", f"127.0.0.1:{port}",
    ]  # fmt: skip
    log = open(root / "server.log", "w")  # noqa: SIM115 - the server outlives this function
    proc = subprocess.Popen(
        cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
    )
    deadline = time.time() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=5):
                return url, proc, database
        except OSError:
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError((root / "server.log").read_text()) from None
            time.sleep(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=32)
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--url", help="an MLflow server to load (default: start one on PG)")
    parser.add_argument("--out", type=Path, default=Path(__file__).with_suffix(".json"))
    args = parser.parse_args()
    ray.init(include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        proc, url, database = None, args.url, None
        if url is None:
            url, proc, database = _serve(root)
        try:
            figures = run_load(url, root / "results", args.trials, args.epochs)
        finally:
            if proc is not None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                _admin(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    figures["machine"] = f"{platform.node()} ({os.cpu_count()} CPUs)"
    figures["date"] = time.strftime("%Y-%m-%d")
    figures["command"] = "python bench/tracking_load.py " + " ".join(sys.argv[1:])
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    f = figures
    print(
        f"{f['trials']} trials × {f['epochs']} epochs: {f['writes']} calls in {f['wall_s']} s "
        f"({f['writes_per_s']}/s); lost: {f['lost']}"
    )
    print(f"{'call':<12}{'n':>6}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}")
    for op, row in figures["latency_ms"].items():
        print(f"{op:<12}{row['n']:>6}{row['p50']:>9}{row['p95']:>9}{row['max']:>9}")


if __name__ == "__main__":
    main()
