"""``--resume`` after a SIGKILL long after Ray Tune's last save: no finished trial runs again.

With ``tune.state_save_s: 600`` Ray Tune saves its experiment state once, at the start (the
study's first trial PENDING), and never again before the kill (no trial checkpoints, so no
forced save): every trial that finished is one the restored state does not have as done. The
first is known to the save (Ray Tune resumes it), the later ones are not (the searcher would
ask for replacements). ``--resume`` must replay them all from MLflow (``tuner.sweep.recorded``):
same run, same end time, not one metric more, and the study ends with exactly its budget.

The sweep replays a small table (``replay:``, half a second an epoch), as in
``tests/test_signals.py``: the real engine, without training.
"""

from __future__ import annotations

import os
import signal
import sqlite3
import subprocess
import time

import pandas as pd
import pytest
import yaml
from _sweep_helpers import BIN, start_sweep, trial_runs, wait_for_finished_trials
from mlflow.tracking import MlflowClient

STUDY = ("demo/count", "lora")
LRS = (0.0003, 0.001, 0.003, 0.01, 0.03, 0.1)
SAMPLES, EPOCHS, KILL_AFTER = 5, 3, 3


def _metric_rows(db, run_ids) -> dict[str, int]:
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        return {
            r: conn.execute("SELECT COUNT(*) FROM metrics WHERE run_uuid = ?", (r,)).fetchone()[0]
            for r in run_ids
        }


@pytest.fixture(scope="module")
def killed_then_resumed(tmp_path_factory):
    root = tmp_path_factory.mktemp("resume_replayed")
    table = root / "recorded.csv"
    rows = [{"task": STUDY[0], "method": STUDY[1], "config": f'{{"lr": {lr}}}', "epoch": e,
             "val_acc": round(0.3 + 0.1 * i * e / 3, 4), "test_acc": round(0.25 + 0.09 * i, 4)}
            for i, lr in enumerate(LRS) for e in range(1, EPOCHS + 1)]  # fmt: skip
    pd.DataFrame(rows).to_csv(table, index=False)
    sweep = root / "sweep.yaml"
    sweep.write_text(
        yaml.safe_dump(
            {
                "name": "replayed",
                "tasks": [STUDY[0]],
                "methods": [STUDY[1]],
                "out_dir": str(root / "results"),
                "replay": {"table": str(table), "epoch_s": 0.5},
                # one trial at a time, no ASHA stop, a save period longer than the test
                "tune": {
                    "num_samples": SAMPLES,
                    "max_epochs": EPOCHS,
                    "grace_period": EPOCHS,
                    "max_concurrent_trials": 1,
                    "state_save_s": 600,
                },
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
    before = trial_runs(db)
    finished = {t: v for t, v in before.items() if v[1] == "FINISHED"}
    rows = _metric_rows(db, [run for run, _, _ in finished.values()])
    second = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=600)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    return root, db, finished, rows, trial_runs(db), second.stdout


def test_every_trial_finished_before_the_kill_is_kept_as_it_was(killed_then_resumed):
    _, db, finished, rows, after, output = killed_then_resumed
    assert len(finished) >= KILL_AFTER
    for trial_id, (run_id, _, end_time) in finished.items():
        assert after[trial_id] == (run_id, "FINISHED", end_time), trial_id
    assert _metric_rows(db, list(rows)) == rows, "a replay logged nothing"
    # none of them was done in Ray Tune's only save: each one was replayed, none trained
    assert f"replaying {len(finished)} trial(s)" in " ".join(output.split())


def test_the_study_ends_with_exactly_its_budget(killed_then_resumed):
    root, db, finished, _, after, output = killed_then_resumed
    done = {t for t, v in after.items() if v[1] == "FINISHED"}
    assert len(done) == SAMPLES and set(finished) <= done
    left = {t: v[1] for t, v in after.items() if v[1] != "FINISHED"}
    assert set(left.values()) <= {"KILLED"}, left  # the trial running at the kill: lost
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    (study,) = [r for r in client.search_runs(
        [client.get_experiment_by_name("replayed").experiment_id], "tags.stage = 'tune'")
        if "trial_id" not in r.data.tags]  # fmt: skip
    assert study.info.status == "FINISHED"
    summary = client.download_artifacts(study.info.run_id, "summary.json", str(root))
    trials = pd.read_json(summary, typ="series")["trials"]
    assert sorted(t["trial_id"] for t in trials) == sorted(done)
    assert all(t["epochs"] == EPOCHS and t["outcome"] == "completed" for t in trials)
    for t in trials:  # a replay ends with the accuracy its run recorded
        run = client.get_run(after[t["trial_id"]][0])
        assert t["val_acc"] == pytest.approx(run.data.metrics["val/acc"]), t["trial_id"]
    assert "leaderboard" in output.lower()
