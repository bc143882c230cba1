"""One running copy of a sweep per store, with real processes on SQLite and PostgreSQL.

Each driver is a real Python process (``tests/_lease_holder.py``) taking the lease the way
the sweep does; the stores are a new SQLite file and an ``mlflow server`` on the machine's
PostgreSQL (the fixture of ``test_mlflow_server``). A stopped process (SIGSTOP) is a
driver whose heartbeat has stopped while its pid lives on (a hung or partitioned driver);
a killed one (SIGKILL) is a crash.
"""

from __future__ import annotations

import json
import os
import queue
import signal
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import pytest
from mlflow import MlflowClient
from test_mlflow_server import server  # noqa: F401 (the PostgreSQL-backed MLflow server)

from tuner.tracking.lease import Holder, SweepLease, SweepLocked
from tuner.tracking.store import ensure_store

HOLDER = Path(__file__).with_name("_lease_holder.py")
ROOT = HOLDER.parent.parent


class Driver:
    """One lease-taking process and the JSON events it prints."""

    def __init__(
        self,
        uri: str,
        experiment: str,
        tmp: Path,
        timeout_s: float = 60.0,
        heartbeat_s: float = 0.5,
        settle_s: float = 0.5,
        go: Path | None = None,
    ):
        """``go``: a file to wait for (a barrier for simultaneous starts); default: start now."""
        self.stop = tmp / f"stop-{uuid.uuid4().hex[:6]}"
        self.timeout_s = timeout_s
        if go is None:
            go = tmp / f"go-{uuid.uuid4().hex[:6]}"
            go.touch()
        args = [uri, experiment, str(go), str(self.stop), str(timeout_s), str(heartbeat_s),
                str(settle_s)]  # fmt: skip
        self.proc = subprocess.Popen(
            [sys.executable, str(HOLDER), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        self.events: queue.Queue[dict] = queue.Queue()
        self.other: list[str] = []  # what else reached stdout (MLflow's own prints)
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        for line in self.proc.stdout:
            if line.startswith("{"):
                self.events.put(json.loads(line))
            else:
                self.other.append(line)

    def next_event(self, timeout: float = 240.0) -> dict:
        try:
            return self.events.get(timeout=timeout)
        except queue.Empty:
            self.proc.kill()
            raise AssertionError(
                f"no event in {timeout} s: {self.other}\n{self.proc.stderr.read()[-3000:]}"
            ) from None

    def release(self) -> int:
        self.stop.touch()
        return self.proc.wait(timeout=60)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(timeout=30)


@pytest.fixture(params=["sqlite", "postgresql"])
def store(request, tmp_path: Path) -> str:
    """A tracking URI: a new SQLite file, or the MLflow server on PostgreSQL."""
    if request.param == "postgresql":
        return request.getfixturevalue("server")["url"]
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ensure_store(uri)
    return uri


@pytest.fixture
def drivers():
    started: list[Driver] = []
    yield started
    for driver in started:
        driver.kill()


def lease_runs(uri: str, experiment: str) -> list:
    client = MlflowClient(tracking_uri=uri)
    exp = client.get_experiment_by_name(experiment)
    return client.search_runs([exp.experiment_id], "tags.stage = 'lease'")


def test_a_second_start_fails_at_once_naming_holder_and_resume(store, tmp_path, drivers):
    experiment = f"sweep-{uuid.uuid4().hex[:6]}"
    first = Driver(store, experiment, tmp_path)
    drivers.append(first)
    held = first.next_event()
    assert held["event"] == "held" and held["takeover"] is None
    second = Driver(store, experiment, tmp_path)
    drivers.append(second)
    locked = second.next_event()
    assert second.proc.wait(timeout=30) == 3
    assert locked["event"] == "locked" and locked["holder_pid"] == first.proc.pid
    # at once: the holder is live, so the refusal never waits for its lease to go stale
    assert locked["took_s"] < first.timeout_s, "the refusal must not wait for the timeout"
    message = locked["message"]
    assert f"sweep {experiment!r} is already running on {store}" in message
    assert f"pid {first.proc.pid}" in message and " since 20" in message
    assert "heartbeat" in message and "--resume" in message and "Wait for it" in message
    (run,) = lease_runs(store, experiment)  # the loser's lease run is gone
    assert run.info.status == "RUNNING" and run.data.tags["petl.lease.pid"] == str(first.proc.pid)
    assert first.release() == 0
    assert lease_runs(store, experiment) == [], "a released lease leaves no run behind"
    third = Driver(store, experiment, tmp_path)
    drivers.append(third)
    again = third.next_event()
    assert again["event"] == "held" and again["takeover"] is None
    assert third.release() == 0


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)  # the store only stores: once
def test_a_stale_heartbeat_is_taken_over_and_the_old_holder_told(store, tmp_path, drivers):
    experiment = f"sweep-{uuid.uuid4().hex[:6]}"
    first = Driver(store, experiment, tmp_path, heartbeat_s=0.5)
    drivers.append(first)
    assert first.next_event()["event"] == "held"
    os.kill(first.proc.pid, signal.SIGSTOP)  # alive, but its heartbeat stops
    try:
        time.sleep(4)
        second = Driver(store, experiment, tmp_path, timeout_s=3.0, heartbeat_s=0.5)
        drivers.append(second)
        held = second.next_event()
    finally:
        os.kill(first.proc.pid, signal.SIGCONT)
    assert held["event"] == "held", held
    takeover = held["takeover"]
    assert f"took over the lease of sweep {experiment!r} from host " in takeover
    assert f"pid {first.proc.pid}" in takeover and "heartbeat is " in takeover
    assert "s old (timeout 3 s)" in takeover
    lost = first.next_event(timeout=30)
    assert lost["event"] == "lost" and "taken over by" in lost["reason"]
    assert first.proc.wait(timeout=30) == 4
    (run,) = lease_runs(store, experiment)
    assert run.data.tags["petl.lease.pid"] == str(second.proc.pid)
    assert second.release() == 0


@pytest.mark.parametrize("store", ["sqlite"], indirect=True)
def test_a_crashed_driver_on_this_host_is_taken_over_at_once(store, tmp_path, drivers):
    experiment = f"sweep-{uuid.uuid4().hex[:6]}"
    first = Driver(store, experiment, tmp_path)
    drivers.append(first)
    assert first.next_event()["event"] == "held"
    first.kill()  # SIGKILL: no release, the lease run stays RUNNING with a fresh heartbeat
    second = Driver(store, experiment, tmp_path, timeout_s=600.0)
    drivers.append(second)
    held = second.next_event()
    assert held["event"] == "held"
    assert f"its process {first.proc.pid} is no longer running on this host" in held["takeover"]
    assert second.release() == 0


def test_simultaneous_starts_agree_on_one_holder(store, tmp_path, drivers):
    experiment = f"sweep-{uuid.uuid4().hex[:6]}"
    go = tmp_path / "go"
    starters = [Driver(store, experiment, tmp_path, settle_s=1.0, go=go) for _ in range(3)]
    drivers.extend(starters)
    time.sleep(3)  # every interpreter has imported and waits at the barrier
    go.touch()
    events = [d.next_event() for d in starters]
    assert sorted(e["event"] for e in events) == ["held", "locked", "locked"], events
    (winner,) = [d for d, e in zip(starters, events, strict=True) if e["event"] == "held"]
    assert {e["holder_pid"] for e in events if e["event"] == "locked"} == {winner.proc.pid}
    time.sleep(1.5)  # a few heartbeats: the holder keeps the lease, nobody reports a loss
    assert winner.proc.poll() is None and winner.events.empty()
    assert winner.release() == 0


def test_lease_in_process_context_manager_and_message(tmp_path):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    ensure_store(uri)
    with SweepLease(uri, "s", settle_s=0.1, heartbeat_s=0.2, timeout_s=5) as lease:
        assert lease.run_id is not None and lease.takeover is None
        deadline = time.time() + 30  # heartbeats renew the tag (every 0.2 s, on a busy box)
        while True:
            (run,) = lease_runs(uri, "s")
            beat = float(run.data.tags["petl.lease.heartbeat"])
            if beat > float(run.data.tags["petl.lease.since"]) or time.time() > deadline:
                break
            time.sleep(0.2)
        assert beat > float(run.data.tags["petl.lease.since"])
        with pytest.raises(SweepLocked) as locked:  # our own pid, alive: a live holder
            SweepLease(uri, "s", settle_s=0.1, resume_command="petl-sweep run s.yaml --resume",
                       timeout_s=5, heartbeat_s=1).acquire()  # fmt: skip
        assert isinstance(locked.value.holder, Holder)
        assert "then run `petl-sweep run s.yaml --resume`" in str(locked.value)
    assert lease_runs(uri, "s") == []
    exp = MlflowClient(tracking_uri=uri).get_experiment_by_name("s")
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"
    with pytest.raises(ValueError, match="heartbeat_s"):
        SweepLease(uri, "s", timeout_s=1, heartbeat_s=2)
