"""``petl-sweep run --resume``: a killed sweep continues with ``Tuner.restore``.

The sweep runs in its own process and is killed (SIGKILL, no chance to clean up) once
some trials have finished. The resumed run must keep those trials as they were (same
MLflow run, same end time, no second run), continue the rest, and finish the sweep.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from _sweep_helpers import trial_runs
from mlflow.tracking import MlflowClient

BIN = Path(sys.executable).parent
SAMPLES, EPOCHS = 4, 2  # four: the kill (once two have finished) lands mid-study


@pytest.fixture(scope="module")
def interrupted_then_resumed(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume")
    sweep = root / "sweep.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "resume",
                "tasks": ["synth/count"],
                "methods": ["lora"],
                "data_root": str(root / "data"),
                "out_dir": str(root / "results"),
                # no ASHA stop and one trial at a time: a clean "some finished" moment
                "tune": {
                    "num_samples": SAMPLES,
                    "max_epochs": EPOCHS,
                    "grace_period": EPOCHS,
                    "max_concurrent_trials": 1,
                },
                "final": {"seeds": 1},
                "ray": {"num_cpus": 2},
            }
        )
    )
    db = root / "results" / "mlflow.db"
    cmd = [str(BIN / "petl-sweep"), "run", str(sweep), "--no-progress"]
    with open(root / "first.log", "w") as log:
        first = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.time() + 400
        while sum(s == "FINISHED" for _, s, _ in trial_runs(db).values()) < 2:
            assert first.poll() is None, (root / "first.log").read_text()[-3000:]
            assert time.time() < deadline, "the first run never finished two trials"
            time.sleep(0.5)
        # Killed at once, mid-study: a fixed wait here let a fast machine finish the study
        # first. Ray Tune saves its state every tune.state_save_s (auto: 10 s or more); a
        # trial that finished since is replayed from MLflow on --resume, never trained again.
        os.killpg(first.pid, signal.SIGKILL)
        first.wait()
    time.sleep(2)
    before = trial_runs(db)
    assert sum(s == "FINISHED" for _, s, _ in before.values()) < SAMPLES, "killed too late"
    second = subprocess.run(
        [*cmd, "--resume"], capture_output=True, text=True, timeout=600, cwd=root
    )
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    return root, before, trial_runs(db), second.stdout


def test_finished_trials_are_not_run_again(interrupted_then_resumed):
    _, before, after, _ = interrupted_then_resumed
    finished = {t: v for t, v in before.items() if v[1] == "FINISHED"}
    assert len(finished) >= 2
    for trial_id, (run_id, _, end_time) in finished.items():
        assert after[trial_id] == (run_id, "FINISHED", end_time), trial_id


def test_the_study_completes_with_exactly_its_budget_of_trials(interrupted_then_resumed):
    root, before, after, output = interrupted_then_resumed
    finished = {t: v for t, v in after.items() if v[1] == "FINISHED"}
    assert len(finished) == SAMPLES, "the budget: finished trials, none run twice"
    assert set(before) <= set(after)
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'results' / 'mlflow.db'}")
    # A trial started just before the kill, before Ray Tune saved it, is re-sampled; its
    # orphaned MLflow run is closed as KILLED/lost instead of staying RUNNING forever.
    for trial_id, (run_id, status, _) in after.items():
        if status != "FINISHED":
            assert status == "KILLED" and trial_id in before, (trial_id, status)
            assert client.get_run(run_id).data.tags["outcome"] == "lost"
    for run_id, _, _ in finished.values():
        steps = [m.step for m in client.get_metric_history(run_id, "val/acc")]
        assert sorted(set(steps)) == list(range(1, EPOCHS + 1)), steps
    assert "leaderboard" in output.lower()


def test_the_study_run_is_marked_resumed_and_finished(interrupted_then_resumed):
    root, _, _, _ = interrupted_then_resumed
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'results' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("resume")
    studies = [
        r
        for r in client.search_runs([experiment.experiment_id], "tags.stage = 'tune'")
        if "trial_id" not in r.data.tags
    ]
    assert len(studies) == 1
    assert studies[0].data.tags.get("resumed") == "true"
    assert studies[0].info.status == "FINISHED"
    finals = client.search_runs([experiment.experiment_id], "tags.stage = 'final'")
    assert len(finals) == 1 and "test/acc" in finals[0].data.metrics
