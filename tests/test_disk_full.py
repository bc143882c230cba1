"""A disk that fills mid-sweep is one clear line, and ``--resume`` recovers once there is room.

``out_dir`` (the SQLite store, Ray Tune's trial state, the journal) lives on a real 48 MiB
tmpfs, filled to the last byte once the first trial has finished. The sweep must exit 1 with
one line that says the disk is full, naming the path and the free space, not a traceback;
the store must stay intact; after space is freed, ``--resume`` must finish the sweep, even
for a study that Ray Tune had opened but whose MLflow run never reached the store.

The sweep replays a small recorded table (one second an epoch): what fills is the engine's
own writing (MLflow, Ray Tune's state, the journal), and training would only add minutes.
"""

from __future__ import annotations

import contextlib
import sqlite3
import subprocess
import time
import uuid

import pytest
import yaml
from _sweep_helpers import BIN, recorded_table, start_sweep, wait_for_finished_trials


@pytest.fixture(scope="module")
def small_disk(tmp_path_factory):
    mount = tmp_path_factory.mktemp("tmpfs")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=48m", "tmpfs", str(mount)],
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def _fill(folder) -> None:
    """Write until the filesystem refuses (ENOSPC)."""
    with open(folder / "ballast", "wb") as f, contextlib.suppress(OSError):
        while True:
            f.write(b"\0" * (1 << 20))
            f.flush()


@pytest.fixture(scope="module")
def filled_then_resumed(small_disk, tmp_path_factory):
    root = tmp_path_factory.mktemp("diskfull")
    out = small_disk / "results"
    sweep = {
        "name": "diskfull",
        "tasks": ["demo/count"],
        "methods": ["linear", "bitfit"],
        "out_dir": str(out),
        "replay": {
            "table": recorded_table(
                root / "recorded.csv", [("demo/count", "linear"), ("demo/count", "bitfit")]
            ),
            "epoch_s": 1.0,
        },
        "tune": {"num_samples": 3, "max_epochs": 3, "grace_period": 3, "max_concurrent_trials": 1},
        "final": {"seeds": 1},
        "ray": {"num_cpus": 2},
    }
    path = root / "sweep.yaml"
    path.write_text(yaml.safe_dump(sweep))
    cmd = [str(BIN / "petl-sweep"), "run", str(path), "--no-progress"]
    log = root / "first.log"
    proc = start_sweep(cmd, log, f"diskfull-{uuid.uuid4().hex[:8]}")
    wait_for_finished_trials(proc, out / "mlflow.db", log, 1)
    _fill(small_disk)
    code = proc.wait(timeout=300)
    first = log.read_text()
    with sqlite3.connect(out / "mlflow.db") as conn:
        integrity = conn.execute("PRAGMA integrity_check").fetchone()[0]
    (small_disk / "ballast").unlink()
    time.sleep(1)
    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=600)
    return code, first, integrity, resumed, out


def test_a_full_disk_is_one_line_naming_the_path_and_the_free_space(filled_then_resumed):
    code, first, integrity, *_ = filled_then_resumed
    assert code == 1, first[-3000:]
    # the last thing said, one message (the console wraps it at 80 columns)
    message = " ".join(first.rsplit("error:", 1)[-1].split())
    assert message.startswith("the disk is full writing "), first[-3000:]
    assert "results/mlflow.db" in message and "free of" in message and "--resume" in message
    assert "Traceback" not in first, first[-3000:]
    assert integrity == "ok"


def test_resume_after_freeing_space_finishes_the_sweep(filled_then_resumed):
    *_, resumed, out = filled_then_resumed
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-2000:]
    with sqlite3.connect(out / "mlflow.db") as conn:
        finals = conn.execute(
            "SELECT count(*) FROM runs r JOIN tags t ON t.run_uuid = r.run_uuid "
            "WHERE t.key = 'stage' AND t.value = 'final' AND r.status = 'FINISHED'"
        ).fetchone()[0]
        running = conn.execute("SELECT count(*) FROM runs WHERE status = 'RUNNING'").fetchone()
    assert finals == 2 and running[0] == 0
