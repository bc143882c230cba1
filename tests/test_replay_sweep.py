"""``petl-sweep run --replay``: the real engine on a planted table whose best is known.

One replay sweep (2 tasks × 2 methods, 4 configurations each, 3-epoch curves with test
accuracies) is shared by the checks: each study picks its planted best, every trial, study
and final run is in MLflow with the recorded curve, and the leaderboard shows the planted
test accuracy. A second sweep replays the first one's MLflow experiment, is SIGKILLed long after Ray
Tune's last save, and ``--resume`` finishes it without running a finished trial again.
"""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest
import ray
import yaml
from mlflow.tracking import MlflowClient
from typer.testing import CliRunner

from tests._sweep_helpers import run_statuses, start_sweep, wait_for_finished_trials
from tuner.cli import app
from tuner.replay.engine import replay_table
from tuner.replay.final import replay_final_run
from tuner.replay.settings import ReplaySettings
from tuner.replay.trial import replayed_curve

BIN = Path(sys.executable).parent
TASKS, METHODS = ["demo/a", "demo/b"], ["m1", "m2"]
CONFIGS = [{"lr": lr, "weight_decay": wd} for lr in (0.001, 0.01) for wd in (0.0, 0.1)]
#: (task, method) → (index of the planted best configuration, its test accuracy)
BEST = {("demo/a", "m1"): (1, 0.81), ("demo/a", "m2"): (2, 0.62),
        ("demo/b", "m1"): (3, 0.73), ("demo/b", "m2"): (0, 0.94)}  # fmt: skip
EPOCHS = 3


def curve(best: bool, index: int) -> list[float]:
    """The best configuration leads at every epoch, so ASHA never stops it."""
    top = 0.9 if best else 0.5 + 0.05 * index
    return [round(top - 0.1 * (EPOCHS - e), 4) for e in range(1, EPOCHS + 1)]


def planted_table(path: Path) -> Path:
    rows = []
    for (task, method), (winner, test) in BEST.items():
        for i, config in enumerate(CONFIGS):
            for epoch, value in enumerate(curve(i == winner, i), start=1):
                rows.append({
                    "task": task, "method": method, "config": json.dumps(config),
                    "epoch": epoch, "val_acc": value,
                    "test_acc": test if i == winner else 0.3, "note": "ignored",
                })  # fmt: skip
    pd.DataFrame(rows).to_csv(path, index=False)
    return path


def sweep_file(root: Path, name: str, **tune: object) -> Path:
    path = root / f"{name}.yaml"
    path.write_text(yaml.safe_dump({
        "name": name, "tasks": TASKS, "methods": METHODS, "out_dir": str(root / "results"),
        "search": {"space": "published_grid"},
        "tune": {"max_epochs": EPOCHS, "grace_period": 1, "max_concurrent_trials": 2, **tune},
        "final": {"seeds": 1}, "ray": {"num_cpus": 2},
    }))  # fmt: skip
    return path


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    root = tmp_path_factory.mktemp("replay")
    table = planted_table(root / "planted.csv")
    cmd = [str(BIN / "petl-sweep"), "run", str(sweep_file(root, "planted")), "--replay",
           str(table), "--no-progress"]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=root)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    client = MlflowClient(tracking_uri=f"sqlite:///{root / 'results' / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("planted").experiment_id
    return root, client, client.search_runs([experiment], max_results=1000), done.stdout


def test_each_study_picks_its_planted_best(planted):
    _, _, runs, _ = planted
    studies = {r.data.tags["study"]: r for r in runs
               if r.data.tags.get("stage") == "tune" and "trial_id" not in r.data.tags}  # fmt: skip
    assert set(studies) == {f"{t}:{m}" for t, m in BEST}
    for (task, method), (winner, _) in BEST.items():
        run = studies[f"{task}:{method}"]
        assert run.info.status == "FINISHED"
        assert run.data.metrics["best_val_acc"] == pytest.approx(0.9)
        best = {k: float(run.data.params[f"best.{k}"]) for k in CONFIGS[winner]}
        assert best == CONFIGS[winner]
        assert run.data.tags["replay"] == "planted.csv"


def test_every_trial_and_final_run_is_in_mlflow_with_the_recorded_numbers(planted):
    _, client, runs, _ = planted
    trials = [r for r in runs if "trial_id" in r.data.tags]
    assert len(trials) == len(BEST) * len(CONFIGS)  # the table's grid, every configuration
    assert {r.info.status for r in trials} == {"FINISHED"}
    for run in trials:
        tags = run.data.tags
        config = {k: float(run.data.params[k]) for k in ("lr", "weight_decay")}
        index = CONFIGS.index(config)
        winner = BEST[(tags["task"], tags["method"])][0]
        steps = sorted(client.get_metric_history(run.info.run_id, "val/acc"), key=lambda m: m.step)
        expected = curve(index == winner, index)[: len(steps)]
        assert [m.value for m in steps] == pytest.approx(expected), (tags["study"], config)
        assert tags["outcome"] in ("completed", "stopped_early")
    finals = [r for r in runs if r.data.tags.get("stage") == "final"]
    assert len(finals) == len(BEST) and {r.info.status for r in finals} == {"FINISHED"}
    for run in finals:
        winner, test = BEST[(run.data.tags["task"], run.data.tags["method"])]
        assert run.data.metrics["test/acc"] == pytest.approx(test)
        assert run.data.metrics["replay/test_recorded"] == 1.0
        assert float(run.data.params["lr"]) == CONFIGS[winner]["lr"]
        artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
        assert "config.json" in artifacts and "test_predictions.parquet" not in artifacts


def test_the_leaderboard_shows_the_planted_test_accuracy(planted):
    root, _, _, output = planted
    summary = pd.read_parquet(root / "results" / "planted" / "leaderboard.parquet")
    got = {(r.task, r.method): r.test_acc for r in summary.itertuples()}
    assert got == pytest.approx({k: test for k, (_, test) in BEST.items()})
    markdown = (root / "results" / "planted" / "leaderboard.md").read_text()
    assert "**94.0**" in markdown and "81.0" in markdown
    assert "leaderboard" in output.lower()
    assert "champions not registered: a replay's final runs have no weights" in output


def test_a_replayed_trial_reports_its_value_at_every_epoch():
    assert replayed_curve([0.7], 4) == [0.7] * 4  # a final-only row
    assert replayed_curve([0.1, 0.2, 0.3], 2) == [0.1, 0.2]
    assert replayed_curve([0.1, 0.2], 4) == [0.1, 0.2, 0.2, 0.2]


def test_a_replayed_final_run_looks_up_the_recorded_test_accuracy(tmp_path):
    """A table with test accuracies gives the chosen configuration's; one without gives its
    last val accuracy, flagged as not recorded."""
    with_test = planted_table(tmp_path / "planted.csv")
    winner, test = BEST[("demo/a", "m1")]
    found = replay_final_run((str(with_test), None, ""), "demo/a", "m1", CONFIGS[winner], 0.0, 5)
    assert (found.test_acc, found.recorded) == (pytest.approx(test), True)
    assert found.wall_s >= 0 and found.node_id == ""
    assert not ray.is_initialized(), "a direct call must not start a Ray"
    frame = pd.read_csv(with_test).drop(columns=["test_acc"])
    frame.to_csv(tmp_path / "val_only.csv", index=False)
    source = (str(tmp_path / "val_only.csv"), None, "")
    found = replay_final_run(source, "demo/a", "m1", CONFIGS[0], None, 5)
    assert (found.test_acc, found.recorded) == (pytest.approx(curve(False, 0)[-1]), False)


def test_replayed_trials_and_final_runs_import_no_torch():
    """Their Ray workers import only these modules: torch in one would cost every replay
    worker about 0.7 GB and seconds of CPU to report numbers it looks up."""
    heavy = "('torch', 'timm', 'tuner.config')"
    code = ("import sys, tuner.replay.trial, tuner.replay.final; "
            f"print(sorted(m for m in {heavy} if m in sys.modules))")  # fmt: skip
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True, timeout=120)  # fmt: skip
    assert done.stdout.strip() == "[]"


def _refused(root: Path, data: dict, table: Path) -> str:
    path = root / "bad.yaml"
    path.write_text(yaml.safe_dump(data))
    result = CliRunner().invoke(app, ["run", str(path), "--replay", str(table), "--no-progress"])
    assert result.exit_code == 2, result.output
    assert not (root / "results").exists(), "nothing may start before the refusal"
    return " ".join(result.output.split())


def test_a_task_or_configuration_not_in_the_table_is_refused_before_anything_runs(tmp_path):
    table = planted_table(tmp_path / "planted.csv")
    base = {"name": "bad", "tasks": TASKS, "methods": METHODS, "out_dir": str(tmp_path / "results")}
    message = _refused(tmp_path, {**base, "tasks": ["demo/a", "demo/zz"]}, table)
    assert "bad.yaml" in message and "demo/zz" in message and "planted.csv" in message
    fixed = {**base, "search": {"fixed": {"m2": {"lr": 0.5}}}}
    message = _refused(tmp_path, fixed, table)
    assert "bad.yaml" in message and "(demo/a, m2)" in message and "'lr': 0.5" in message
    message = _refused(tmp_path, {**base, "methods": ["m1", "nope"]}, table)
    assert "nope" in message and "m1" in message


def _trial_rows(db: Path) -> list[tuple[str, str, str, str, int | None, int]]:
    """(study, trial id, run id, status, end time, metric rows) of every trial run."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=10) as conn:
        return conn.execute(
            "SELECT s.value, t.value, r.run_uuid, r.status, r.end_time,"
            " (SELECT COUNT(*) FROM metrics m WHERE m.run_uuid = r.run_uuid) FROM runs r"
            " JOIN tags t ON t.run_uuid = r.run_uuid AND t.key = 'trial_id'"
            " JOIN tags s ON s.run_uuid = r.run_uuid AND s.key = 'study'"
        ).fetchall()


@pytest.fixture(scope="module")
def resumed_from_experiment(planted, tmp_path_factory):
    """A replay of the planted sweep's MLflow experiment, SIGKILLed long after Ray Tune's
    last save, then ``--resume``d.

    With ``tune.state_save_s: 600`` Ray Tune saves its state once, at the start, and never
    again before the kill. One trial and one study at a time; the kill lands once the first
    study has finished every trial and the second one has finished one: the first study
    finished after the save (the restored state has it open), the second opened after it
    (the restored state never heard of it or its trials). ``--resume`` must replay every
    finished trial from MLflow (``tuner.sweep.recorded``): same run, same end time, not one
    metric more."""
    source_root = planted[0]
    root = tmp_path_factory.mktemp("replay_resume")
    sweep = sweep_file(root, "again", max_concurrent_trials=1, state_save_s=600)
    uri = f"sqlite:///{source_root / 'results' / 'mlflow.db'}"
    cmd = [str(BIN / "petl-sweep"), "run", str(sweep), "--replay-experiment", "planted",
           "--tracking-uri", uri, "--set", "replay.epoch_s=0.4",
           "--set", "resources.max_concurrent_studies=1", "--no-progress"]  # fmt: skip
    db, log = root / "results" / "mlflow.db", root / "first.log"
    first = start_sweep(cmd, log, f"replay-resume-{os.getpid()}")
    wait_for_finished_trials(first, db, log, 2)
    deadline = time.time() + 300
    while len({r[0] for r in _trial_rows(db) if r[3] == "FINISHED"}) < 2:
        assert first.poll() is None and time.time() < deadline, log.read_text()[-3000:]
        time.sleep(0.2)
    time.sleep(0.5)  # the kill lands mid-trial
    os.killpg(first.pid, signal.SIGKILL)
    first.wait()
    time.sleep(2)
    before = _trial_rows(db)
    second = subprocess.run([*cmd, "--resume"], capture_output=True, text=True, timeout=600,
                            cwd=root)  # fmt: skip
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    table = replay_table(ReplaySettings(experiment="planted", tracking_uri=uri))
    return root, db, before, _trial_rows(db), table, second.stdout


def test_the_experiment_replay_resumes_without_rerunning_a_finished_trial(
    resumed_from_experiment,
):
    _, _, before, after, table, output = resumed_from_experiment
    finished = [r for r in before if r[3] == "FINISHED"]
    assert len({r[0] for r in finished}) >= 2, "the kill came after the second study opened"
    for row in finished:
        assert row in after, row  # same run, same end, not one metric more: never run again
    assert max(Counter(r[1] for r in after).values()) == 1, "no trial has a second run"
    # none of them was in Ray Tune's only save: each one was replayed, none trained again
    assert f"replaying {len(finished)} trial(s)" in " ".join(output.split())
    # the table from MLflow: the planted sweep's trials that ran every epoch
    grid = {(t, m): len(table.configs(t, m)) for t, m in table.studies()}
    assert set(grid) == set(BEST) and all(n >= 1 for n in grid.values())
    done = Counter(r[0] for r in after if r[3] == "FINISHED")
    assert done == {f"{t}:{m}": n for (t, m), n in grid.items()}, "each configuration once"


def test_each_resumed_study_ends_in_one_run_with_its_recorded_trials(resumed_from_experiment):
    root, db, _, after, _, output = resumed_from_experiment
    assert "RUNNING" not in run_statuses(db)  # the trial running at the kill: KILLED or lost
    client = MlflowClient(tracking_uri=f"sqlite:///{db}")
    experiment = client.get_experiment_by_name("again").experiment_id
    studies = [r for r in client.search_runs([experiment], "tags.stage = 'tune'")
               if "trial_id" not in r.data.tags]  # fmt: skip
    finished_ids = {r[1]: r[2] for r in after if r[3] == "FINISHED"}
    assert sorted(r.data.tags["study"] for r in studies) == sorted(f"{t}:{m}" for t, m in BEST)
    assert all(r.info.status == "FINISHED" for r in studies)
    for study in studies:
        summary = client.download_artifacts(study.info.run_id, "summary.json", str(root))
        trials = json.loads(Path(summary).read_text())["trials"]
        assert trials and all(t["trial_id"] in finished_ids for t in trials)
        for t in trials:  # a replay ends with the accuracy its run recorded
            run = client.get_run(finished_ids[t["trial_id"]])
            assert t["val_acc"] == pytest.approx(run.data.metrics["val/acc"]), t["trial_id"]
    finals = client.search_runs([experiment], "tags.stage = 'final'")
    assert sorted(r.data.tags["study"] for r in finals) == sorted(
        r.data.tags["study"] for r in studies
    )
    assert "leaderboard" in output.lower()
    assert "champions not registered: a replay's final runs have no weights" in output
