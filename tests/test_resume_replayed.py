"""``--resume`` after a SIGKILL long after Ray Tune's last save: no finished trial runs again.

With ``tune.state_save_s: 600`` Ray Tune saves its experiment state once, at the start (the
first study open, its first trial PENDING), and never again before the kill (no trial
checkpoints, so no forced save). Two studies, one open at a time, are killed once the second
has finished a trial: the first study finished after the save (the driver reuses it, yet the
restored state has it open, its first trial to resume); the second opened after the save (the
restored state never heard of it or of its trials). ``--resume`` must replay every finished
trial from MLflow (``tuner.sweep.recorded``): same run, same end time, not one metric more;
each study ends with exactly its budget, in one study run.

The sweep replays a small table (``replay:``, half a second an epoch), as in
``tests/test_signals.py``: the real engine, without training.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time
from collections import Counter

import pandas as pd
import pytest
import yaml
from _sweep_helpers import BIN, run_statuses, start_sweep, wait_for_finished_trials
from mlflow.tracking import MlflowClient

TASKS, METHOD = ("demo/a", "demo/b"), "lora"
LRS = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1)
SAMPLES, EPOCHS = 3, 3
KILL_AFTER = SAMPLES + 1  # the first study's trials and one of the second's


def _trial_rows(db) -> list[tuple[str, str, str, str, int | None, int]]:
    """(study, trial id, run id, status, end time, metric rows) of every trial run."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        return conn.execute(
            "SELECT s.value, t.value, r.run_uuid, r.status, r.end_time,"
            " (SELECT COUNT(*) FROM metrics m WHERE m.run_uuid = r.run_uuid) FROM runs r"
            " JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'trial_id'"
            " JOIN tags s ON s.run_uuid = r.run_uuid AND s.key = 'study'"
        ).fetchall()


@pytest.fixture(scope="module")
def killed_then_resumed(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume_replayed")
    table = root / "recorded.csv"
    rows = [{"task": task, "method": METHOD, "config": f'{{"lr": {lr}}}', "epoch": e,
             "val_acc": round(0.3 + 0.1 * i * e / 3, 4), "test_acc": round(0.25 + 0.09 * i, 4)}
            for task in TASKS for i, lr in enumerate(LRS)
            for e in range(1, EPOCHS + 1)]  # fmt: skip
    pd.DataFrame(rows).to_csv(table, index=False)
    sweep = root / "sweep.yaml"
    tune = {"num_samples": SAMPLES, "max_epochs": EPOCHS, "grace_period": EPOCHS,
            "max_concurrent_trials": 1, "state_save_s": 600}  # fmt: skip
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "replayed",
                "tasks": list(TASKS),
                "methods": [METHOD],
                "out_dir": str(root / "results"),
                "replay": {"table": str(table), "epoch_s": 0.5},
                # one trial and one study at a time, no ASHA stop, no save but the first
                "tune": tune,
                "resources": {"max_concurrent_studies": 1},
                "final": {"seeds": 1},
                "ray": {"num_cpus": 2},
            }
        )
    )
    cmd = [str(BIN / "petl-sweep"), "run", str(sweep), "--no-progress"]
    db, log = root / "results" / "mlflow.db", root / "first.log"
    first = start_sweep(cmd, log, f"resume-replayed-{os.getpid()}")
    wait_for_finished_trials(first, db, log, KILL_AFTER)
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    time.sleep(1)
    before = _trial_rows(db)
    second = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    return root, db, before, _trial_rows(db), second.stdout


def test_every_trial_finished_before_the_kill_is_kept_as_it_was(killed_then_resumed):
    _, _, before, after, output = killed_then_resumed
    finished = [r for r in before if r[3] == "FINISHED"]
    assert len(finished) >= KILL_AFTER
    assert {r[0] for r in finished} == {f"{t}:{METHOD}" for t in TASKS}
    for row in finished:  # same run, same end time, not one metric more
        assert row in after, row
    runs = Counter(r[1] for r in after)
    assert max(runs.values()) == 1, "no trial has a second run"
    # none of them was done in Ray Tune's only save: each one was replayed, none trained
    assert f"replaying {len(finished)} trial(s)" in " ".join(output.split())


def test_each_study_ends_with_exactly_its_budget_in_one_run(killed_then_resumed):
    root, db, _, after, output = killed_then_resumed
    done = Counter(r[0] for r in after if r[3] == "FINISHED")
    assert done == {f"{t}:{METHOD}": SAMPLES for t in TASKS}
    assert "RUNNING" not in run_statuses(db)  # the trial running at the kill: KILLED/lost
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("replayed").experiment_id
    studies = [r for r in client.search_runs([experiment], "tags.stage = 'tune'")
               if "trial_id" not in r.data.tags]  # fmt: skip
    assert sorted(r.data.tags["study"] for r in studies) == sorted(done)  # one run each
    assert all(r.info.status == "FINISHED" for r in studies)
    finished_ids = {r[1]: r[2] for r in after if r[3] == "FINISHED"}
    for study in studies:
        summary = client.download_artifacts(study.info.run_id, "summary.json", str(root))
        trials = pd.read_json(summary, typ="series")["trials"]
        assert len(trials) == SAMPLES and all(t["trial_id"] in finished_ids for t in trials)
        for t in trials:  # a replay ends with the epochs and accuracy its run recorded
            assert (t["epochs"], t["outcome"]) == (EPOCHS, "completed")
            run = client.get_run(finished_ids[t["trial_id"]])
            assert t["val_acc"] == pytest.approx(run.data.metrics["val/acc"]), t["trial_id"]
    finals = client.search_runs([experiment], "tags.stage = 'final'")
    assert sorted(r.data.tags["study"] for r in finals) == sorted(done)
    assert "leaderboard" in output.lower()
