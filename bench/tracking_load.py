"""Many trials logging at once through the sweep's tracker to an MLflow server on PostgreSQL.

A cluster sweep runs dozens of trials at a time, and every epoch of each one is an MLflow
write through the sweep's one tracker actor. This starts ``--trials`` Ray tasks at once (a
fractional CPU each, as trials packed on a node are), each a trial's worth of tracking:
start a nested run under a study parent, log params, ``--epochs`` × (train/val loss and
accuracy, lr, epoch time), an artifact, end the run. It times every call as the trial sees
it (the actor round trip, MLflow included), then reads everything back from the server and
counts what is missing: runs not FINISHED, metric steps absent, artifacts absent.

Rate mode (``--rate``) is the cluster's pace: ``--trials`` trials, each reporting an epoch
every ``1/rate`` s for ``--seconds`` s (starts spread over the first period), as a
sweep's trial callbacks do (``ensure_run`` with params, the epochs, an artifact, ``end_run``
with tags). The trials are threads of this process (one each), not Ray tasks: what is
measured is the tracker, not Ray's task start-up on a small machine. Each call is timed as
the trial sees it when it waits (the actor round trip; the sweep's callbacks do not wait),
and the ``.remote()`` submit alone. It reports what was lost (read back from the server),
the lag at the end (the last trial's last call to every write in MLflow: the tracker's
``flush`` returning), trial calls/s and MLflow requests/s, the backlog and the tracker's RSS.

Usage (PostgreSQL on 127.0.0.1:5432, trust auth; the script starts and stops its server):
``python bench/tracking_load.py [--trials 32 --epochs 20] [--url http://...]`` prints the
latency table and writes ``bench/tracking_load.json``;
``python bench/tracking_load.py --trials 256 --seconds 120 --rate 1`` is the rate mode
(``bench/tracking_load_rate.json``). The CI test
``tests/test_mlflow_server.py::test_32_concurrent_trials_lose_no_write`` calls ``run_load``
on the test server.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
import uuid
from concurrent.futures import ThreadPoolExecutor
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

    calls = [c for timings in results for c in timings]
    lost, latency = _lost(url, name, parent, trials, epochs), _table(calls)
    writes = len(calls)
    return {
        "trials": trials, "epochs": epochs, "writes": writes, "wall_s": round(wall, 2),
        "writes_per_s": round(writes / wall, 1), "latency_ms": latency, "lost": lost,
        "journal_left": status["pending"], "outages": status["outages"],
    }  # fmt: skip


def _table(calls: list[tuple[str, float]]) -> dict[str, dict[str, float]]:
    out = {}
    for op in sorted({op for op, _ in calls}):
        ms = np.array([s for o, s in calls if o == op]) * 1000
        out[op] = {
            "n": int(ms.size),
            **{q: round(float(np.percentile(ms, p)), 2) for q, p in (("p50", 50), ("p95", 95),
                                                                      ("p99", 99))},
            "max": round(float(ms.max()), 1),
        }  # fmt: skip
    return out


def _lost(url: str, name: str, parent: str, trials: int, epochs: int) -> dict[str, int]:
    """Read every trial run back from the server: what is missing."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name(name)
    runs, token = [], None
    while True:
        page = client.search_runs([experiment.experiment_id], max_results=1000, page_token=token)
        runs.extend(page)
        token = page.token
        if not token:
            break
    children = [r for r in runs if r.data.tags.get(PARENT_RUN_TAG) == parent]

    def missing(run: Any) -> tuple[int, int, int]:
        steps = 0
        for metric in METRICS:
            seen = {m.step for m in client.get_metric_history(run.info.run_id, metric)}
            steps += len(set(range(1, epochs + 1)) - seen)
        return run.info.status != "FINISHED", steps, not client.list_artifacts(run.info.run_id)

    with ThreadPoolExecutor(8) as pool:
        rows = list(pool.map(missing, children))
    return {
        "runs": trials - len(children), "unfinished": sum(r[0] for r in rows),
        "metric_steps": sum(r[1] for r in rows), "artifacts": sum(r[2] for r in rows),
    }  # fmt: skip


def _tracker_pid() -> int | None:
    """The tracker actor's process among this driver's own Ray processes (other Ray
    instances on the machine have theirs)."""
    import psutil

    for proc in psutil.Process(os.getpid()).children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if " ".join(proc.cmdline()).startswith("ray::BufferedTracker"):
                return proc.pid
    return None


def rate_trial(tracker: Any, index: int, epochs: int, period: float, start: float) -> dict:
    """One trial at the cluster's pace: an epoch every ``period`` s from ``start`` (epoch s)."""
    timings, submits, late = [], [], 0.0

    def call(name: str, method: Any, *args: Any) -> None:
        t0 = time.perf_counter()
        ref = method.remote(*args)
        t1 = time.perf_counter()
        ray.get(ref)
        timings.append((name, time.perf_counter() - t0))
        submits.append((name, t1 - t0))

    key = f"trial-{index}"
    time.sleep(max(0.0, start - time.time()))
    params = {"lr": 1e-3 * (index + 1), "wd": 1e-4}
    call("ensure_run", tracker.ensure_run, key, key, {"stage": "tune"}, params, "study")
    rng = np.random.default_rng(index)
    for epoch in range(1, epochs + 1):
        due = start + epoch * period
        late = max(late, time.time() - due)
        time.sleep(max(0.0, due - time.time()))
        values = {m: float(v) for m, v in zip(METRICS, rng.random(len(METRICS)), strict=True)}
        call("log_metrics", tracker.log_metrics, key, values, epoch)
    call("artifact", tracker.log_artifact_bytes, key, "result.json", b'{"ok": true}')
    call("end_run", tracker.end_run, key, "FINISHED", {"outcome": "completed"})
    return {"timings": timings, "submits": submits, "late": late, "last": time.time()}


def run_rate(
    url: str,
    out_dir: Path,
    trials: int,
    seconds: float,
    rate: float,
    server_pid: int | None = None,
    **options: Any,
) -> dict[str, Any]:
    """``trials`` threads at ``rate`` epochs/s for ``seconds`` through the sweep's tracker
    actor (``options`` to ``BufferedTracker``); every write read back from ``url``. The CPU
    of the tracker and of the server (``server_pid`` and its children) is sampled too."""
    name = f"rate-{uuid.uuid4().hex[:8]}"
    cfg = parse_config(
        {
            "name": name, "tasks": ["synth/count"], "methods": ["linear"],
            "out_dir": str(out_dir), "tracking": {"uri": url},
        }
    )  # fmt: skip
    tracker = start_tracker(cfg, **options)
    ray.get(tracker.start_run.remote("study", "study", {"stage": "tune"}))
    parent = ray.get(tracker.run_id.remote("study"))
    pid = _tracker_pid()
    epochs, period = round(seconds * rate), 1.0 / rate
    samples: list[dict[str, Any]] = []
    done = threading.Event()

    def watch() -> None:  # the backlog, the tracker's memory, both sides' CPU every 2 s
        import psutil

        procs = {"tracker": [psutil.Process(pid)] if pid else []}
        if server_pid:
            server = psutil.Process(server_pid)
            procs["server"] = [server, *server.children(recursive=True)]
        for proc in (p for group in procs.values() for p in group):
            proc.cpu_percent()  # the first reading is 0: start the interval
        while not done.wait(2.0):
            row = {"t": round(time.time() - begin, 1), **ray.get(tracker.backlog.remote())}
            with contextlib.suppress(psutil.Error, IndexError):
                row["rss_mib"] = round(procs["tracker"][0].memory_info().rss / 2**20, 1)
            for role, group in procs.items():
                with contextlib.suppress(psutil.Error):
                    row[f"{role}_cpu_pct"] = round(sum(p.cpu_percent() for p in group))
            row["load1"] = round(os.getloadavg()[0], 1)
            samples.append(row)

    begin = time.time()
    starts = [begin + 2.0 + period * i / trials for i in range(trials)]
    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    with ThreadPoolExecutor(trials) as pool:
        results = list(
            pool.map(lambda i: rate_trial(tracker, i, epochs, period, starts[i]), range(trials))
        )
    last = max(r["last"] for r in results)
    ray.get(tracker.flush.remote())
    lag = time.time() - last
    done.set()
    watcher.join()
    ray.get(tracker.end_run.remote("study", "FINISHED"))
    ray.get(tracker.close.remote())
    status = ray.get(tracker.status.remote())
    sent = ray.get(tracker.mlflow_calls.remote())
    taken = sum(ray.get(tracker.call_counts.remote()).values())
    ray.kill(tracker)
    drive = last - starts[0]
    return {
        "mode": "rate", "trials": trials, "seconds": seconds, "rate": rate,
        "tracker_options": options, "drive_s": round(drive, 1),
        "lag_at_end_s": round(lag, 2),
        "trial_calls": taken, "trial_calls_per_s": round(taken / drive, 1),
        "mlflow_requests": sent,
        "mlflow_requests_per_s": round(sum(sent.values()) / (drive + lag), 1),
        "max_late_s": round(max(r["late"] for r in results), 2),
        "latency_ms": _table([c for r in results for c in r["timings"]]),
        "submit_ms": _table([c for r in results for c in r["submits"]]),
        "backlog_max": max((s["queued"] for s in samples), default=0),
        "tracker_rss_mib": {
            "first": samples[0].get("rss_mib") if samples else None,
            "max": max((s.get("rss_mib", 0) for s in samples), default=None),
        },
        "cpu_pct_mean": {
            role: round(float(np.mean([s[f"{role}_cpu_pct"] for s in samples])))
            for role in ("tracker", "server") if samples and f"{role}_cpu_pct" in samples[0]
        },
        "load1_mean": round(float(np.mean([s["load1"] for s in samples])), 1) if samples else None,
        "samples": samples, "lost": _lost(url, name, parent, trials, epochs),
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


def _serve(root: Path, workers: int = 1) -> tuple[str, subprocess.Popen, str]:
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
        "--port", str(port), "--workers", str(workers), "--allowed-hosts", f"127.0.0.1:{port}",
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
    parser.add_argument("--seconds", type=float, default=120.0, help="rate mode: how long")
    parser.add_argument("--rate", type=float, help="rate mode: epochs per second per trial")
    parser.add_argument("--workers", type=int, help="the tracker's writer threads")
    parser.add_argument("--server-workers", type=int, default=1, help="the MLflow server's")
    parser.add_argument("--flush-every", type=float, help="the tracker's flush interval (s)")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()
    suffix = "_rate.json" if args.rate else ".json"
    args.out = args.out or Path(__file__).with_name(Path(__file__).stem + suffix)
    options = {k: v for k, v in (("workers", args.workers), ("flush_every", args.flush_every)) if v}
    ray.init(include_dashboard=False, log_to_driver=False)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        proc, url, database = None, args.url, None
        if url is None:
            url, proc, database = _serve(root, args.server_workers)
        try:
            if args.rate:
                pid = proc.pid if proc is not None else None
                figures = run_rate(
                    url, root / "results", args.trials, args.seconds, args.rate, pid, **options
                )
            else:
                figures = run_load(url, root / "results", args.trials, args.epochs)
        finally:
            if proc is not None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                _admin(f"DROP DATABASE IF EXISTS {database} WITH (FORCE)")
    figures["server_workers"] = args.server_workers
    figures["machine"] = f"{platform.node()} ({os.cpu_count()} CPUs)"
    figures["date"] = time.strftime("%Y-%m-%d")
    figures["command"] = "python bench/tracking_load.py " + " ".join(sys.argv[1:])
    args.out.write_text(json.dumps(figures, indent=2) + "\n")
    f = figures
    if args.rate:
        keys = ("lost", "lag_at_end_s", "trial_calls_per_s", "mlflow_requests_per_s",
                "mlflow_requests", "max_late_s", "backlog_max", "tracker_rss_mib",
                "cpu_pct_mean", "load1_mean")  # fmt: skip
        print(json.dumps({k: f[k] for k in keys}))
    else:
        print(
            f"{f['trials']} trials × {f['epochs']} epochs: {f['writes']} calls in {f['wall_s']} s "
            f"({f['writes_per_s']}/s); lost: {f['lost']}"
        )
    print(f"{'call':<12}{'n':>6}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}")
    for op, row in figures["latency_ms"].items():
        print(f"{op:<12}{row['n']:>6}{row['p50']:>9}{row['p95']:>9}{row['max']:>9}")


if __name__ == "__main__":
    main()
