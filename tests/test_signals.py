"""Ctrl-C and SIGTERM stop a real sweep cleanly, and ``--resume`` finishes it as if never
stopped.

A terminal's Ctrl-C sends SIGINT to the whole foreground process group; Kubernetes and CI
send SIGTERM to the process. Each is sent to a real ``petl-sweep run`` once a trial has
finished. The sweep must exit 130 / 143 (never an abort), name the ``--resume`` command,
leave no MLflow run RUNNING and no process behind; ``--resume`` must then give the same
leaderboard (chosen configurations and test accuracies) as a run never interrupted, with
``max_concurrent_trials: 1`` so that TPE sees the same history.

The sweeps replay a small recorded table (``replay:``, one second an epoch) instead of
training: every other part is the real engine (CLI, Ray Tune, TPE, ASHA, the tracker, MLflow,
the trials' stop-and-park, the final stage), and the suite does not pay for training that
these checks do not look at.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor

import pytest
import yaml
from _sweep_helpers import (
    BIN,
    processes_with,
    recorded_table,
    run_statuses,
    start_sweep,
    wait_for_finished_trials,
)
from mlflow.tracking import MlflowClient

STUDY = ("demo/count", "lora")
SWEEP = {
    "tasks": [STUDY[0]],
    "methods": [STUDY[1]],
    "tune": {"num_samples": 3, "max_epochs": 3, "grace_period": 3, "max_concurrent_trials": 1},
    "final": {"seeds": 1},
    "ray": {"num_cpus": 2},
}


def _table(root) -> str:
    """Three-epoch curves, a different best epoch value and test accuracy per lr."""
    return recorded_table(root / "recorded.csv", [STUDY])


def _sweep(root, name: str) -> tuple[list[str], os.PathLike]:
    path = root / f"{name}.yaml"
    data = {**SWEEP, "name": name, "out_dir": str(root / name),
            "replay": {"table": _table(root), "epoch_s": 1.0}}  # fmt: skip
    path.write_text(yaml.safe_dump(data))
    return [str(BIN / "petl-sweep"), "run", str(path), "--no-progress"], root / name / "mlflow.db"


def _outcome(db, name: str) -> dict[str, tuple[dict, float]]:
    """(chosen configuration, test accuracy) per study: what the leaderboard is made of."""
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name(name)
    finals = client.search_runs([experiment.experiment_id], "tags.stage = 'final'")
    return {
        r.data.tags["study"]: (
            {k: v for k, v in r.data.params.items() if k not in ("seed", "epochs")},
            r.data.metrics["test/acc"],
        )
        for r in finals
    }


def _never_stopped(root) -> dict[str, tuple[dict, float]]:
    cmd, db = _sweep(root, "never-stopped")
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stdout[-3000:]
    return _outcome(db, "never-stopped")


def _stop_then_resume(root, sig: signal.Signals, whole_group: bool):
    name = f"stopped-{sig.name.lower()}"
    cmd, db = _sweep(root, name)
    log = root / f"{name}.log"
    marker = f"{name}-{time.time_ns()}"
    proc = start_sweep(cmd, log, marker)
    wait_for_finished_trials(proc, db, log, 1)
    (os.killpg if whole_group else os.kill)(proc.pid, sig)
    code = proc.wait(timeout=180)
    time.sleep(2)  # what the sweep stopped has had time to exit
    left = processes_with(marker)
    stopped = log.read_text()
    statuses = run_statuses(db)
    resumed = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=600)
    return code, stopped, statuses, left, resumed, _outcome(db, name)


#: (signal, sent to the whole process group?): a terminal's Ctrl-C, Kubernetes' SIGTERM
STOPS = [("SIGINT", True), ("SIGTERM", False)]


@pytest.fixture(scope="module")
def sweeps(tmp_path_factory):
    """The never-stopped reference and one stopped-then-resumed sweep per signal, all at
    once: each is its own process with its own Ray, and most of their time is waiting
    (Ray's start, replayed epochs), so together they take little more than the longest.
    Which signal reaches which sweep does not depend on the others: each stop waits on its
    own sweep's store."""
    root = tmp_path_factory.mktemp("signals")
    _table(root)  # written once, before the three sweeps read it
    with ThreadPoolExecutor(len(STOPS) + 1) as pool:
        reference = pool.submit(_never_stopped, root)
        stops = {sig: pool.submit(_stop_then_resume, root, signal.Signals[sig], group)
                 for sig, group in STOPS}  # fmt: skip
        return reference.result(), {sig: future.result() for sig, future in stops.items()}


@pytest.fixture(params=STOPS, ids=str)
def stopped(request, sweeps):
    reference, stops = sweeps
    sig = request.param[0]
    return (signal.Signals[sig], *stops[sig], reference)


def test_the_sweep_exits_with_the_signals_code_and_never_aborts(stopped):
    sig, code, output, *_ = stopped
    assert code == {signal.SIGINT: 130, signal.SIGTERM: 143}[sig], output[-3000:]
    assert "SIGTERM received at" not in output and "Aborted" not in output
    assert f"Interrupted ({sig.name})" in output


def test_the_message_gives_the_exact_resume_command(stopped):
    _, _, output, *_ = stopped
    assert "Continue with:" in output
    command = output.split("Continue with:")[1].strip().splitlines()[0]
    assert command.startswith("petl-sweep run ") and command.endswith(".yaml --resume")


def test_no_run_is_left_running_and_no_process_is_left(stopped):
    _, _, output, statuses, left, *_ = stopped
    assert statuses and "RUNNING" not in statuses, output[-2000:]
    assert "KILLED" in statuses  # the interrupted study and trial, to be continued
    assert left == [], f"processes left behind: {left}"


def test_resume_gives_the_leaderboard_of_a_sweep_never_stopped(stopped):
    *_, resumed, outcome, reference = stopped
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-2000:]
    assert set(outcome) == set(reference) == {"demo/count:lora"}
    for study, (config, acc) in reference.items():
        assert outcome[study][0] == config
        assert outcome[study][1] == pytest.approx(acc, abs=1e-9)
