"""Helpers for tests that run a real sweep in its own process and stop it from outside."""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

BIN = Path(sys.executable).parent


@contextmanager
def local_ray(num_cpus: int) -> Iterator[None]:
    """A Ray of this test's own for the block, shut down however the block ends.

    ``address="local"`` always starts one: a plain ``ray.init()`` would join a ``ray start``
    cluster that another test (the cluster tests, on the other xdist worker) left under
    /tmp/ray."""
    import ray

    ray.init(address="local", num_cpus=num_cpus, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()


def trial_runs(db: Path) -> dict[str, tuple[str, str, int | None]]:
    """trial_id → (run id, status, end time) of every trial run so far.

    Read with sqlite3, read-only: an MlflowClient here could race the sweep's own process
    while it creates the store's tables."""
    if not db.exists():
        return {}
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
            rows = conn.execute(
                "SELECT t.value, r.run_uuid, r.status, r.end_time FROM runs r "
                "JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'trial_id'"
            ).fetchall()
    except sqlite3.OperationalError:  # tables not created yet
        return {}
    return {trial: (run, status, end) for trial, run, status, end in rows}


def run_statuses(db: Path) -> list[str]:
    """The status of every run in the store."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        return [status for (status,) in conn.execute("SELECT status FROM runs").fetchall()]


def start_sweep(cmd: list[str], log: Path, marker: str) -> subprocess.Popen:
    """A sweep in its own session; ``marker`` in its environment names it and every process
    it starts (Ray's included), so the test can tell whether any is left."""
    env = {**os.environ, "PETL_TEST_MARKER": marker}
    with open(log, "w") as out:
        return subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, start_new_session=True, env=env
        )


def wait_for_finished_trials(proc: subprocess.Popen, db: Path, log: Path, n: int) -> None:
    deadline = time.time() + 400
    while sum(s == "FINISHED" for _, s, _ in trial_runs(db).values()) < n:
        assert proc.poll() is None, log.read_text()[-3000:]
        assert time.time() < deadline, f"the sweep never finished {n} trial(s)"
        time.sleep(0.5)


def processes_with(marker: str) -> list[int]:
    """Live processes whose environment carries ``marker`` (zombies do not count)."""
    found = []
    needle = f"PETL_TEST_MARKER={marker}".encode()
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            if needle in (proc / "environ").read_bytes():
                state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
                if state != "Z":
                    found.append(int(proc.name))
        except OSError:
            continue
    return found


#: The learning rates of ``recorded_table``: six configurations a study
LRS = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1)


def recorded_table(path: Path, studies: list[tuple[str, str]], epochs: int = 3) -> str:
    """A small replay table (``replay.table``) for tests whose subject is the engine, not
    training: per (task, method) study, six lr configurations with ``epochs``-epoch curves,
    each lr a different best value and test accuracy. Written once per path."""
    import pandas as pd

    if not path.exists():
        rows = [{"task": task, "method": method, "config": f'{{"lr": {lr}}}',
                 "epoch": epoch, "val_acc": round(0.3 + 0.1 * i * epoch / epochs, 4),
                 "test_acc": round(0.25 + 0.09 * i, 4)}
                for task, method in studies
                for i, lr in enumerate(LRS) for epoch in range(1, epochs + 1)]  # fmt: skip
        pd.DataFrame(rows).to_csv(path, index=False)
    return str(path)
