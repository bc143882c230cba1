"""A real multi-node Ray cluster on 127.0.0.1: ``petl-sweep submit`` runs a sweep as a job.

``ray start`` brings up a head and a worker node (one CPU each, token authentication on,
as Ray 2.60 ships it), the sweep is submitted through the dashboard's job API, and the test
checks what a user would: the job succeeded, trials ran on both nodes, and every study,
trial, final run and the leaderboard reached MLflow.

The first sweep trains (tiny ViT, synthetic task) on both nodes. The node-loss and stop
sweeps replay a small recorded table (``replay:``, two seconds an epoch): their trials are
real Ray Tune trials on both nodes, reporting, checkpointing and restarting as a training
trial does, and what they check is the engine's, not training's.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from _sweep_helpers import recorded_table
from conftest import free_port

from tuner.config import ConfigError
from tuner.submit import SubmitError, submit
from tuner.tracking.client import TrackingService
from tuner.tracking.names import PARENT_RUN_TAG

BIN = Path(sys.executable).parent
TASK, METHODS, SAMPLES = "synth/count", ["linear", "lora"], 2


def _kill_cluster(marker: str) -> None:
    """Stop only this cluster's processes (``ray stop`` would kill every Ray here)."""
    victims = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace")
        except OSError:
            continue
        if proc.name.isdigit() and marker in cmdline and int(proc.name) != os.getpid():
            victims.append(int(proc.name))
    for pid in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


@pytest.fixture(scope="module")
def cluster():
    token = secrets.token_hex(32)
    temp_dir = tempfile.mkdtemp(prefix="rt", dir="/tmp")  # short: Ray's socket paths
    gcs, dashboard = free_port(), free_port()
    env = {
        **os.environ,
        "RAY_AUTH_MODE": "token",
        "RAY_AUTH_TOKEN": token,
        "PATH": f"{BIN}:{os.environ['PATH']}",  # the job's `python` is this venv's
        "RAY_JOB_STOP_WAIT_TIME_S": "60",  # as cluster/base/raycluster.yaml sets on the head
    }
    common = ["--node-ip-address=127.0.0.1", "--num-cpus=1", "--disable-usage-stats"]

    def own_ports() -> list[str]:
        """Two nodes on one host must not share agent ports (separate machines would not)."""
        return [
            f"--dashboard-agent-listen-port={free_port()}",
            f"--dashboard-agent-grpc-port={free_port()}",
            f"--metrics-export-port={free_port()}",
        ]

    head = [
        str(BIN / "ray"),
        "start",
        "--head",
        f"--port={gcs}",
        "--include-dashboard=true",
        "--dashboard-host=127.0.0.1",
        f"--dashboard-port={dashboard}",
        f"--temp-dir={temp_dir}",
        *common,
        *own_ports(),
    ]
    # Each node keeps its own runtime-env folders, as separate machines would: two nodes
    # sharing one folder would garbage-collect each other's unpacked job directories.
    worker_dir = tempfile.mkdtemp(prefix="rw", dir="/tmp")
    worker = [
        str(BIN / "ray"),
        "start",
        f"--address=127.0.0.1:{gcs}",
        f"--temp-dir={worker_dir}",
        *common,
        *own_ports(),
    ]
    extra: list[str] = []

    def add_worker() -> str:
        """Start one more worker node; returns its temp dir (which names its processes)."""
        folder = tempfile.mkdtemp(prefix="rx", dir="/tmp")
        extra.append(folder)
        command = [*worker[:3], f"--temp-dir={folder}", *common, *own_ports()]
        subprocess.run(command, env=env, check=True, timeout=180, capture_output=True)
        return folder

    try:
        subprocess.run(head, env=env, check=True, timeout=180, capture_output=True)
        subprocess.run(worker, env=env, check=True, timeout=180, capture_output=True)
        yield {
            "address": f"http://127.0.0.1:{dashboard}",
            "token": token,
            "gcs": gcs,
            "add_worker": add_worker,
        }
    finally:
        for folder in [temp_dir, worker_dir, *extra]:
            _kill_cluster(folder)
        _kill_cluster(f"127.0.0.1:{gcs}")


@pytest.fixture
def authed(cluster, monkeypatch):
    monkeypatch.setenv("RAY_AUTH_MODE", "token")
    monkeypatch.setenv("RAY_AUTH_TOKEN", cluster["token"])
    monkeypatch.delenv("RAY_AUTH_TOKEN_PATH", raising=False)
    return cluster


def _sweep_file(root: Path, replay_epoch_s: float | None = None) -> Path:
    """The cluster's sweep file: training, or with ``replay_epoch_s`` replaying a recorded
    table of the same studies at that many seconds an epoch."""
    sweep = {
        "name": "cluster-job",
        "tasks": [TASK],
        "methods": METHODS,
        "data_root": str(root / "data"),
        "out_dir": str(root / "results"),
        "tune": {
            "num_samples": SAMPLES,
            "max_epochs": 2,
            "grace_period": 1,
            "max_concurrent_trials": 2,
        },
        "final": {"seeds": 1},
        "resources": {"cpus_per_trial": 1, "max_concurrent_studies": 2},
        "ray": {"address": "auto"},
    }
    if replay_epoch_s is not None:
        table = recorded_table(root / "recorded.csv", [(TASK, m) for m in METHODS], epochs=4)
        sweep["replay"] = {"table": table, "epoch_s": replay_epoch_s}
    path = root / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    return path


def _nodes(cluster) -> set[str]:
    out = subprocess.run(
        [str(BIN / "ray"), "list", "nodes", "--format=yaml", f"--address={cluster['address']}"],
        env={**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": cluster["token"]},
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    ).stdout
    return {n["node_id"] for n in yaml.safe_load(out) if n["state"] == "ALIVE"}


def _cli(cluster, *args: str, timeout: int = 900) -> subprocess.CompletedProcess:
    """``petl-sweep`` as a user runs it: a fresh process (Ray caches its auth settings
    per process), with the cluster's token in the environment."""
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": cluster["token"]}
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    return subprocess.run(
        [str(BIN / "petl-sweep"), *args, "--address", cluster["address"]],
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def test_sweep_job_spreads_trials_over_nodes_and_reaches_mlflow(cluster, tmp_path):
    assert len(_nodes(cluster)) == 2
    run = _cli(cluster, "submit", str(_sweep_file(tmp_path)), "--timeout", "850")
    (tmp_path / "job.log").write_text(run.stdout + run.stderr)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    job_id = re.search(r"submitted job (\S+)", run.stdout).group(1)
    assert f"job {job_id}: SUCCEEDED" in run.stdout
    assert "leaderboard" in run.stdout.lower()

    tracking = f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}"
    runs = TrackingService(tracking, "cluster-job", create=False).search()
    trials = [r for r in runs if PARENT_RUN_TAG in r["tags"]]
    finals = [r for r in runs if r["tags"].get("stage") == "final"]
    studies = [r for r in runs if r["tags"].get("stage") == "tune" and r not in trials]
    assert sorted(r["tags"]["method"] for r in studies) == sorted(METHODS)
    assert len(trials) == SAMPLES * len(METHODS)
    assert len(finals) == len(METHODS) and all("test/acc" in r["metrics"] for r in finals)
    assert [r["tags"]["stage"] for r in runs].count("leaderboard") == 1
    trial_nodes = {r["tags"]["node"] for r in trials}
    assert trial_nodes <= _nodes(cluster)
    assert len(trial_nodes | {r["tags"]["node"] for r in finals}) == 2, "trials on both nodes"
    spread = {n[:8]: sum(r["tags"]["node"] == n for r in trials) for n in trial_nodes}
    print(f"\njob {job_id}: trials per node {spread}")

    status = _cli(cluster, "job", "status", job_id, timeout=120)
    assert status.returncode == 0 and status.stdout.strip() == "SUCCEEDED", status.stderr
    logs = _cli(cluster, "job", "logs", job_id, timeout=120)
    assert "Running entrypoint for job" in logs.stdout
    assert "python -m tuner run sweep.yaml" in logs.stdout


def test_submit_refuses_a_bad_sweep_before_uploading(authed, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: x\ntasks: [synth/count]\nmethods: [lorra]\n")
    with pytest.raises(ConfigError, match="lorra"):
        submit(bad, authed["address"])


def _list_jobs(address: str, token: str) -> subprocess.CompletedProcess:
    """A fresh process: Ray caches the token it loaded once per process."""
    code = f"from tuner.submit import client_for; print(len(client_for({address!r}).list_jobs()))"
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    return subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )


def test_the_cluster_enforces_its_token(cluster):
    good = _list_jobs(cluster["address"], cluster["token"])
    assert good.returncode == 0, good.stderr[-2000:]
    bad = _list_jobs(cluster["address"], "0" * 64)
    assert bad.returncode != 0
    assert re.search(r"(?i)auth|token|401|403|unauthori", bad.stderr), bad.stderr[-2000:]


def test_token_auth_is_never_disabled(monkeypatch, tmp_path):
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    with pytest.raises(SubmitError, match="never disables"):
        submit(_sweep_file(tmp_path), "http://127.0.0.1:1")


def test_cli_job_status_of_an_unknown_job_fails(cluster):
    result = _cli(cluster, "job", "status", "no-such-job", timeout=120)
    assert result.returncode != 0
    assert "no-such-job" in result.stdout + result.stderr


def _children(pid: int) -> list[int]:
    kids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError):
            if int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1]) == pid:
                kids.append(int(proc.name))
    return kids


def _busy_trial_on(marker: str) -> bool:
    """Whether a trial is training on the node whose raylet carries ``marker``."""
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        with contextlib.suppress(OSError):
            cmd = (proc / "cmdline").read_bytes().decode(errors="replace")
            if "raylet" in cmd and marker in cmd:
                for kid in _children(int(proc.name)):
                    title = Path(f"/proc/{kid}/cmdline").read_bytes().decode(errors="replace")
                    if "ray::ImplicitFunc" in title or "ray::trial_" in title:
                        return True
    return False


def test_losing_a_worker_mid_sweep_loses_nothing(cluster, tmp_path):
    """SIGKILL a worker node while it trains a trial: the job still succeeds, every study
    has all its trials finished, no run is left RUNNING, no epoch's metric is missing."""
    import time

    marker = cluster["add_worker"]()
    sweep = yaml.safe_load(_sweep_file(tmp_path, replay_epoch_s=2.0).read_text())
    sweep["name"] = "node-loss"
    sweep["tune"].update(num_samples=3, max_epochs=4, grace_period=4)  # no early stops
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    env = {**os.environ, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": cluster["token"]}
    env.pop("RAY_AUTH_TOKEN_PATH", None)
    job = subprocess.Popen(
        [str(BIN / "petl-sweep"), "submit", str(tmp_path / "sweep.yaml"), "--address",
         cluster["address"], "--timeout", "850"],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    deadline = time.time() + 600
    while not _busy_trial_on(marker):
        assert job.poll() is None and time.time() < deadline, "no trial reached the worker"
        time.sleep(0.5)
    time.sleep(2)
    _kill_cluster(marker)  # the whole node: raylet, its workers, its agents
    output, _ = job.communicate(timeout=900)
    (tmp_path / "job.log").write_text(output)
    assert job.returncode == 0 and "SUCCEEDED" in output, output[-3000:]

    tracker = TrackingService(f"sqlite:///{tmp_path / 'results' / 'mlflow.db'}", "node-loss")
    assert tracker.find({}, status="RUNNING") == []
    runs = tracker.search()
    trials = [r for r in runs if PARENT_RUN_TAG in r["tags"]]
    for method in METHODS:
        done = [t for t in trials if t["tags"]["method"] == method and t["status"] == "FINISHED"]
        assert len(done) == 3 and all(t["tags"]["outcome"] == "completed" for t in done)
        for t in done:
            steps = {m.step for m in tracker.client.get_metric_history(t["run_id"], "val/acc")}
            assert steps == {1, 2, 3, 4}, (method, steps)
    assert len([r for r in runs if r["tags"].get("stage") == "final"]) == len(METHODS)


def test_job_stop_takes_the_sweeps_clean_stop(cluster, tmp_path):
    """``petl-sweep job stop`` (Ray sends the driver SIGTERM) ends the sweep the way Ctrl-C
    does: the job log names ``--resume``, the driver exits 143, no MLflow run is RUNNING."""
    import time

    sweep = yaml.safe_load(_sweep_file(tmp_path, replay_epoch_s=2.0).read_text())
    sweep["name"] = "job-stop"
    sweep["tune"].update(num_samples=3, max_epochs=4, grace_period=4)
    (tmp_path / "sweep.yaml").write_text(yaml.safe_dump(sweep))
    run = _cli(cluster, "submit", str(tmp_path / "sweep.yaml"), "--no-wait", timeout=300)
    assert run.returncode == 0, (run.stdout + run.stderr)[-3000:]
    job_id = re.search(r"submitted job (\S+)", run.stdout).group(1)
    db = tmp_path / "results" / "mlflow.db"
    from _sweep_helpers import trial_runs

    deadline = time.time() + 600
    while not any(s == "FINISHED" for _, s, _ in trial_runs(db).values()):
        assert time.time() < deadline, "no trial finished"
        time.sleep(1)
    stop = _cli(cluster, "job", "stop", job_id, timeout=120)
    assert stop.returncode == 0, stop.stderr[-2000:]
    deadline = time.time() + 180
    while (status := _cli(cluster, "job", "status", job_id, timeout=120).stdout.strip()) in (
        "RUNNING", "PENDING"
    ):  # fmt: skip
        assert time.time() < deadline, "the job did not stop"
        time.sleep(2)
    assert status == "STOPPED", status
    logs = _cli(cluster, "job", "logs", job_id, timeout=120).stdout
    assert "Interrupted (SIGTERM)" in logs and "--resume" in logs, logs[-3000:]
    tracker = TrackingService(f"sqlite:///{db}", "job-stop", create=False)
    assert tracker.find({}, status="RUNNING") == []
    assert tracker.find({"outcome": "interrupted"}, status="KILLED")
