"""End to end on a local Ray: a mini sweep lands in MLflow and yields a leaderboard.

One sweep (2 tasks × 2 methods, 6 trials each) is run once for the module; the tests read
what it left behind: MLflow runs, ASHA decisions, Optuna's records, the leaderboard files.
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd
import pytest
import ray
from rich.console import Console

from tuner.config import parse_config
from tuner.pipeline import run_pipeline
from tuner.sweep import tracking_uri
from tuner.tracking import TrackingService

TASKS = ["synth/dsprites_loc", "synth/textures"]
METHODS = ["linear", "lora"]
SAMPLES = 6
SEEDS = 2


@pytest.fixture(scope="module")
def sweep(tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    cfg = parse_config(
        {
            "name": "mini",
            "tasks": TASKS,
            "methods": METHODS,
            "seed": 0,
            "data_root": str(root / "data"),
            "out_dir": str(root / "results"),
            "tune": {
                "num_samples": SAMPLES,
                "max_epochs": 3,
                "grace_period": 1,
                "reduction_factor": 2,
                "max_concurrent_trials": 2,
            },
            "final": {"seeds": SEEDS},
            "ray": {"num_cpus": 2},
        }
    )
    with open(root / "console.txt", "w") as log:
        result = run_pipeline(cfg, Console(file=log, width=200), live=False)
    ray.shutdown()
    runs = TrackingService(tracking_uri(cfg), cfg.experiment).search()
    return cfg, result, runs


def test_parent_and_child_runs_with_tags_and_metrics(sweep):
    cfg, _, runs = sweep
    parents = [
        r
        for r in runs
        if r["tags"].get("stage") == "tune" and "mlflow.parentRunId" not in r["tags"]
    ]
    children = [r for r in runs if "mlflow.parentRunId" in r["tags"]]
    assert sorted(p["tags"]["study"] for p in parents) == sorted(
        f"{t}:{m}" for t in TASKS for m in METHODS
    )
    assert len(children) == len(TASKS) * len(METHODS) * SAMPLES
    parent_ids = {p["run_id"]: p for p in parents}
    for child in children:
        parent = parent_ids[child["tags"]["mlflow.parentRunId"]]
        for tag in ("task", "method", "backbone", "stage", "study"):
            assert child["tags"][tag] == parent["tags"][tag]
        assert {"train/loss", "val/acc", "epoch_time_s", "trainable_params"} <= set(
            child["metrics"]
        )
        assert "lr" in child["params"] and "weight_decay" in child["params"]
        assert child["tags"]["outcome"] in {"completed", "stopped_early", "diverged"}
    assert all(p["tags"]["backbone"] == cfg.backbone for p in parents)


def test_asha_stopped_some_trials_and_optuna_heard_it(sweep):
    _, result, runs = sweep
    outcomes = [t["outcome"] for s in result["studies"].values() for t in s["trials"]]
    assert outcomes.count("stopped_early") > 0 and outcomes.count("completed") > 0
    epochs_logged = [int(r["tags"]["epochs_run"]) for r in runs if "epochs_run" in r["tags"]]
    assert min(epochs_logged) < 3 and max(epochs_logged) == 3
    for summary in result["studies"].values():
        stopped = sum(t["outcome"] == "stopped_early" for t in summary["trials"])
        assert summary["optuna_states"].get("PRUNED", 0) == stopped


def test_leaderboard_has_a_finite_test_accuracy_per_task_and_method(sweep):
    _, result, runs = sweep
    summary = pd.read_parquet(result["paths"]["summary"])
    assert sorted(zip(summary["task"], summary["method"], strict=True)) == sorted(
        (t, m) for t in TASKS for m in METHODS
    )
    assert all(math.isfinite(a) and 0 <= a <= 1 for a in summary["test_acc"])
    text = Path(result["paths"]["markdown"]).read_text()
    assert "mean (flat)" in text and "mean (group)" in text and "lora" in text
    finals = [r for r in runs if r["tags"].get("stage") == "final"]
    assert len(finals) == len(TASKS) * len(METHODS) * SEEDS
    assert all("test/acc" in r["metrics"] for r in finals)
    assert (summary["seeds"] == SEEDS).all() and len({r["tags"]["seed"] for r in finals}) == SEEDS
    board = [r for r in runs if r["tags"].get("stage") == "leaderboard"]
    assert len(board) == 1 and "lora/mean_flat" in board[0]["metrics"]


def test_final_configs_are_the_best_validation_trials(sweep):
    _, result, _ = sweep
    for summary in result["studies"].values():
        best = summary["best"]
        full = [t for t in summary["trials"] if t["outcome"] == "completed"]
        assert best["val_acc"] == max(t["val_acc"] for t in full)
    for final in result["finals"]:
        best = result["studies"][final["study"]]["best"]
        assert final["spec"]["hp"] == best["config"]


def test_tuning_never_evaluates_on_test(sweep):
    _, _, runs = sweep
    tune_runs = [r for r in runs if r["tags"].get("stage") == "tune"]
    assert tune_runs and not any("test/acc" in r["metrics"] for r in tune_runs)


def test_datasets_are_logged_as_mlflow_inputs(sweep):
    cfg, result, _ = sweep
    tracker = TrackingService(tracking_uri(cfg), cfg.experiment, create=False)
    final = next(iter(result["finals"]))
    run = tracker.client.get_run(tracker.find({"final_hash": final["final_hash"]})[0]["run_id"])
    (inp,) = run.inputs.dataset_inputs
    assert inp.dataset.name == final["spec"]["task"] and len(inp.dataset.digest) == 16
    assert '"test": 1000' in inp.dataset.profile


def test_rerun_reuses_finished_studies_and_finals(sweep):
    cfg, first, runs = sweep
    with open(Path(cfg.out_dir) / "rerun.txt", "w") as log:
        again = run_pipeline(cfg, Console(file=log, width=200), live=False)
    ray.shutdown()
    assert again["reused"] == {
        "studies": len(TASKS) * len(METHODS),
        "finals": len(TASKS) * len(METHODS) * SEEDS,
    }
    assert again["finals"] == []
    after = TrackingService(tracking_uri(cfg), cfg.experiment).search()
    # nothing re-ran: only one more leaderboard run was added
    assert len(after) == len(runs) + 1
    before = pd.read_parquet(first["paths"]["summary"])
    rebuilt = pd.read_parquet(again["paths"]["summary"])
    assert before["test_acc"].tolist() == rebuilt["test_acc"].tolist()


def test_every_trial_trained_its_own_study_method(sweep):
    """Concurrent studies share one Ray job; a trial must never run another study's spec
    (linear trains nothing but the head, lora always adds parameters)."""
    _, _, runs = sweep
    for run in runs:
        if "mlflow.parentRunId" not in run["tags"]:
            continue
        added = run["metrics"]["trainable_params_without_head"]
        assert (added == 0) == (run["tags"]["method"] == "linear"), run["tags"]
