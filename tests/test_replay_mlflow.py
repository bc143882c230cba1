"""A replay table from a finished sweep's MLflow experiment (trial runs written with the
project's TrackingService into a temporary SQLite store; no sweep runs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from tuner.cli import app
from tuner.replay.table import TableError, from_experiment
from tuner.tracking.client import TrackingService

EPOCHS = 3


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    """Two studies × two ranks × two lrs, with curves; plus one trial ASHA stopped (dropped)
    and a parent run without metrics (ignored)."""
    uri = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    tracker = TrackingService(uri, "sweep")
    for task in ("synth/a", "synth/b"):
        study = f"{task}:lora"
        tracker.start_run(study, study, {"stage": "tune", "task": task, "method": "lora"})
        n = 0
        for rank in (4, 8):
            for lr in (0.001, 0.01):
                n += 1
                key = f"{study}/t{n}"
                tags = {"stage": "tune", "task": task, "method": "lora", "trial_id": f"t{n}"}
                tracker.start_run(key, key, tags, params={"rank": rank, "lr": lr}, parent=study)
                for epoch in range(1, EPOCHS + 1):
                    val = (0.2 * n + 0.1 * epoch) / 1.5
                    tracker.log_metrics(key, {"val/acc": val, "test/acc": val - 0.05,
                                              "epoch_time_s": 0.5}, epoch)  # fmt: skip
                tracker.end_run(key)
        stopped = f"{study}/stopped"
        tags = {"stage": "tune", "task": task, "method": "lora", "trial_id": "stopped"}
        tracker.start_run(stopped, stopped, tags, params={"rank": 16, "lr": 0.1}, parent=study)
        tracker.log_metrics(stopped, {"val/acc": 0.1}, 1)
        tracker.end_run(stopped)
        tracker.end_run(study)
    return uri


def test_table_from_experiment(store: str) -> None:
    table = from_experiment("sweep", store)
    assert table.studies() == [("synth/a", "lora"), ("synth/b", "lora")]
    assert table.has_curves and table.has_test
    configs = table.configs("synth/a", "lora")
    assert len(configs) == 4 and {"rank": 16, "lr": 0.1} not in configs  # ASHA-stopped: out
    assert table.values("synth/a", "lora") == {"lr": [0.001, 0.01], "rank": [4, 8]}
    curve = table.curve("synth/a", "lora", {"rank": 8, "lr": 0.01})  # 4th trial: n = 4
    assert curve == pytest.approx([(0.8 + 0.1 * e) / 1.5 for e in (1, 2, 3)])
    assert table.test_acc("synth/a", "lora", {"rank": "8", "lr": "0.01"}) == pytest.approx(
        curve[-1] - 0.05
    )
    assert table.epoch_s("synth/a", "lora", {"rank": 8, "lr": 0.01}) == 0.5
    with pytest.raises(ValueError, match="no MLflow experiment 'nope'"):
        from_experiment("nope", store)


def test_empty_experiment_is_a_clear_error(tmp_path: Path) -> None:
    uri = f"sqlite:///{tmp_path / 'empty.db'}"
    TrackingService(uri, "empty")
    with pytest.raises(TableError, match="no finished trial run"):
        from_experiment("empty", uri)


def test_cli_replays_the_experiment_with_asha(store: str, tmp_path: Path) -> None:
    args = ["replay", "--experiment", "sweep", "--tracking-uri", store, "--json",
            "--seeds", "2", "--strategies", "grid,grid+asha,default+asha",
            "--plot", str(tmp_path / "r.png")]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout[result.stdout.index("{") :])
    assert doc["studies"] == 2 and doc["max_epochs"] == EPOCHS
    grid, asha = doc["strategies"]["grid"], doc["strategies"]["grid+asha"]
    assert grid["ratio_vs_grid"] == 1.0 and grid["trial_epochs_ratio"] == 1.0
    assert grid["test_tie_rate"] == 1.0  # the grid ties itself
    # the trials' curves rise with the trial index, so table order never stops one early
    assert asha["trial_epochs_ratio"] == 1.0 and asha["hit_rate"] == 1.0
    assert doc["strategies"]["default+asha"]["asha"] is True
    assert (tmp_path / "r.png").stat().st_size > 10_000
