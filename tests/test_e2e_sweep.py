"""End to end on a local Ray: a mini sweep lands in MLflow and yields a leaderboard.

One sweep (2 tasks × 2 methods, 6 trials each) is run once for the session (``mini_sweep``
in ``tests/conftest.py``, shared with the delivery tests); the tests read what it left
behind: MLflow runs, ASHA decisions, Optuna's records, the leaderboard files.
"""

from __future__ import annotations

import math
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest
import ray
from rich.console import Console

from tests.conftest import MINI_METHODS as METHODS
from tests.conftest import MINI_SAMPLES as SAMPLES
from tests.conftest import MINI_SEEDS as SEEDS
from tests.conftest import MINI_TASKS as TASKS
from tuner.sweep.pipeline import run_pipeline
from tuner.tracking.client import TrackingService
from tuner.tracking.names import PARENT_RUN_TAG


@pytest.fixture(scope="module")
def sweep(mini_sweep):
    """The session's mini sweep (``tests/conftest.py``): cfg, result, runs after it."""
    cfg, result, runs, _ = mini_sweep
    return cfg, result, runs


def test_parent_and_child_runs_with_tags_and_metrics(sweep):
    cfg, _, runs = sweep
    parents = [
        r for r in runs if r["tags"].get("stage") == "tune" and PARENT_RUN_TAG not in r["tags"]
    ]
    children = [r for r in runs if PARENT_RUN_TAG in r["tags"]]
    assert sorted(p["tags"]["study"] for p in parents) == sorted(
        f"{t}:{m}" for t in TASKS for m in METHODS
    )
    assert len(children) == len(TASKS) * len(METHODS) * SAMPLES
    parent_ids = {p["run_id"]: p for p in parents}
    for child in children:
        parent = parent_ids[child["tags"][PARENT_RUN_TAG]]
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
    outcomes = [t.outcome for t in result.trials]
    assert outcomes.count("stopped_early") > 0 and outcomes.count("completed") > 0
    epochs_logged = [int(r["tags"]["epochs_run"]) for r in runs if "epochs_run" in r["tags"]]
    assert min(epochs_logged) < 3 and max(epochs_logged) == 3
    for summary in result.studies.values():
        stopped = sum(t.outcome == "stopped_early" for t in summary.trials)
        assert summary.optuna_states.get("PRUNED", 0) == stopped


def test_leaderboard_has_a_finite_test_accuracy_per_task_and_method(sweep):
    cfg, result, runs = sweep
    summary = pd.read_parquet(result.outputs["summary"])
    assert sorted(zip(summary["task"], summary["method"], strict=True)) == sorted(
        (t, m) for t in TASKS for m in METHODS
    )
    assert all(math.isfinite(a) and 0 <= a <= 1 for a in summary["test_acc"])
    text = Path(result.outputs["markdown"]).read_text()
    assert "mean (flat)" in text and "mean (group)" in text and "lora" in text
    finals = [r for r in runs if r["tags"].get("stage") == "final"]
    assert len(finals) == len(TASKS) * len(METHODS) * SEEDS
    assert all("test/acc" in r["metrics"] for r in finals)
    assert (summary["seeds"] == SEEDS).all() and len({r["tags"]["seed"] for r in finals}) == SEEDS
    board = [r for r in runs if r["tags"].get("stage") == "leaderboard"]
    assert len(board) == 1 and "lora/mean_flat" in board[0]["metrics"]
    # robustness: the shifted task's finals were scored on its shift set, shown as a column
    shifted = summary[summary["task"] == TASKS[1]]["shift/noise/acc"]
    assert shifted.between(0, 1).all() and f"{TASKS[1]} [shift noise]" in text
    printed = (Path(cfg.out_dir).parent / "console.txt").read_text()
    assert f"{TASKS[1]} [shift noise]" in printed  # printed as text, not eaten as markup


def test_final_configs_are_the_best_validation_trials(sweep):
    _, result, _ = sweep
    for summary in result.studies.values():
        full = [t for t in summary.trials if t.outcome == "completed"]
        assert summary.best.val_acc == max(t.val_acc for t in full)
    for final in result.finals:
        assert final.spec.hp == result.studies[final.study].best.config


def test_tuning_never_evaluates_on_test(sweep):
    _, _, runs = sweep
    trials = [r for r in runs if r["tags"].get("stage") == "tune" and PARENT_RUN_TAG in r["tags"]]
    assert trials and not any("test/acc" in r["metrics"] for r in trials)
    history = TrackingService(*_store(sweep)).client.get_metric_history
    assert all(not history(r["run_id"], "test/acc") for r in trials), (
        "a trial logged test accuracy at some epoch"
    )


def test_datasets_are_logged_as_mlflow_inputs(sweep):
    cfg, result, _ = sweep
    tracker = TrackingService(cfg.tracking_uri, cfg.experiment, create=False)
    final = next(iter(result.finals))
    run = tracker.client.get_run(tracker.find({"final_hash": final.final_hash})[0]["run_id"])
    (inp,) = run.inputs.dataset_inputs
    assert inp.dataset.name == final.spec.task and len(inp.dataset.digest) == 16
    assert '"test": 1000' in inp.dataset.profile


def test_rerun_reuses_finished_studies_and_finals(sweep):
    cfg, first, runs = sweep
    with open(Path(cfg.out_dir) / "rerun.txt", "w") as log:
        again = run_pipeline(cfg, Console(file=log, width=200), live=False)
    ray.shutdown()
    assert again.reused_studies == len(TASKS) * len(METHODS)
    assert again.reused_finals == len(TASKS) * len(METHODS) * SEEDS
    assert again.finals == []
    after = TrackingService(cfg.tracking_uri, cfg.experiment).search()
    # nothing re-ran: only one more leaderboard run was added
    assert len(after) == len(runs) + 1
    before = pd.read_parquet(first.outputs["summary"])
    rebuilt = pd.read_parquet(again.outputs["summary"])
    assert before["test_acc"].tolist() == rebuilt["test_acc"].tolist()


def test_every_study_tuned_in_one_ray_tune_run(sweep):
    """One Tuner for the sweep (not one per study): one experiment folder holds every trial."""
    cfg, _, _ = sweep
    (experiment,) = [p for p in Path(cfg.storage_path).iterdir() if p.is_dir()]
    assert experiment.name == cfg.name
    trials = [p for p in experiment.iterdir() if p.name.startswith(f"trial_{cfg.name}_")]
    assert len(trials) == len(TASKS) * len(METHODS) * SAMPLES


def test_every_trial_trained_its_own_study_method(sweep):
    """Concurrent studies share one Ray job; a trial must never run another study's spec
    (linear trains nothing but the head, lora always adds parameters)."""
    _, _, runs = sweep
    for run in runs:
        if PARENT_RUN_TAG not in run["tags"]:
            continue
        added = run["metrics"]["trainable_params_without_head"]
        assert (added == 0) == (run["tags"]["method"] == "linear"), run["tags"]


def _store(sweep) -> tuple[str, str]:
    cfg = sweep[0]
    return cfg.tracking_uri, cfg.experiment


def test_study_runs_carry_the_headline_columns(sweep):
    """Sorting the runs table and the parallel-coordinates chart work across studies: each
    study's parent run has val/acc (its best trial), the leaderboard's test/acc and the
    chosen hyper-parameters as ``best.*`` params."""
    _, result, _ = sweep
    runs = TrackingService(*_store(sweep)).search()
    summary = pd.read_parquet(result.outputs["summary"]).set_index(["task", "method"])
    parents = [
        r for r in runs if r["tags"].get("stage") == "tune" and PARENT_RUN_TAG not in r["tags"]
    ]
    assert len(parents) == len(TASKS) * len(METHODS)
    for run in parents:
        study = result.studies[run["tags"]["study"]]
        row = summary.loc[(run["tags"]["task"], run["tags"]["method"])]
        assert run["metrics"]["val/acc"] == pytest.approx(study.best.val_acc)
        assert run["metrics"]["test/acc"] == pytest.approx(row["test_acc"])
        assert run["params"]["best.lr"] == str(study.best.config["lr"])


def test_final_runs_carry_their_real_duration_and_the_experiment_opens_on_runs(sweep):
    tracker = TrackingService(*_store(sweep))
    kind = tracker.client.get_experiment(tracker.experiment_id).tags
    assert kind["mlflow.experimentKind"] == "custom_model_development"
    finals = tracker.find({"stage": "final"})
    assert finals
    for run in finals:
        info = tracker.client.get_run(run["run_id"]).info
        duration = (info.end_time - info.start_time) / 1000
        assert duration == pytest.approx(run["metrics"]["wall_s"], abs=0.01)
        assert duration > 1.0  # a retrain, not the instant of logging it


def test_each_run_logs_the_sums_of_its_epoch_times_at_its_end(sweep):
    """What the slot utilisation reads instead of every run's metric history."""
    tracker = TrackingService(*_store(sweep))
    runs = [r for r in tracker.find({"sweep": sweep[0].name})
            if PARENT_RUN_TAG in r["tags"] or r["tags"].get("stage") == "final"]  # fmt: skip
    assert runs
    for run in runs:
        for name in ("epoch_time_s", "eval_time_s", "checkpoint_s"):
            history = tracker.client.get_metric_history(run["run_id"], name)
            total = run["metrics"][f"{name}_total"]
            assert total == pytest.approx(sum(m.value for m in history), abs=1e-6), name
        assert run["metrics"]["epoch_time_s_total"] > 0


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
_UNITS = {"ms": 0.001, "s": 1.0, "min": 60.0, "h": 3600.0}


def _dom_text(url: str, profile: Path) -> str:
    """What a person sees on ``url``: headless Chromium's DOM after the app rendered."""
    flags = [
        "--headless", "--no-sandbox", "--disable-gpu", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync",
        f"--user-data-dir={profile}", "--virtual-time-budget=20000", "--dump-dom",
    ]  # fmt: skip
    out = subprocess.run(
        [CHROMIUM, *flags, url], capture_output=True, text=True, timeout=120, check=True
    )
    text = re.sub(r"<style.*?</style>|<script.*?</script>", " ", out.stdout, flags=re.S)
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", text))


@pytest.mark.skipif(CHROMIUM is None, reason="Debian's chromium is not installed")
def test_mlflow_ui_opens_on_the_study_runs_with_true_durations(sweep, tmp_path):
    """The URL ``petl-sweep ui`` prints lands on the runs table (not MLflow's GenAI traces
    overview) listing every study; a final run's page shows its retrain's duration."""
    from conftest import free_port

    from tuner.tracking.ui import runs_url, start_ui

    _, result, _ = sweep
    tracker = TrackingService(*_store(sweep))
    port = free_port()
    process = start_ui(tracker.tracking_uri, port)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while True:
            try:
                urllib.request.urlopen(f"{base}/health", timeout=2)
                break
            except OSError:
                assert time.time() < deadline, "mlflow ui did not come up"
                time.sleep(0.5)
        page = _dom_text(runs_url(base, tracker.experiment_id), tmp_path / "p1")
        assert all(study in page for study in result.studies), page[:2000]
        assert "Token Usage" not in page and "Traces 0" not in page
        final = tracker.find({"stage": "final"})[0]
        url = f"{base}/#/experiments/{tracker.experiment_id}/runs/{final['run_id']}"
        shown = re.search(r"Duration ([0-9.]+) ?(ms|s|min|h)\b", _dom_text(url, tmp_path / "p2"))
        assert shown, "no Duration on the run page"
        seconds = float(shown[1]) * _UNITS[shown[2]]
        assert seconds == pytest.approx(final["metrics"]["wall_s"], abs=1.0)
    finally:
        process.terminate()
        process.wait(timeout=30)
