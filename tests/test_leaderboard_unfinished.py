"""The leaderboard of an unfinished sweep, and duplicate final runs, from a hand-made store.

No sweep runs: the MLflow records an interrupted, double-started sweep leaves are planted
with ``TrackingService`` in a temp SQLite store, and the leaderboard is built from them.
"""

from __future__ import annotations

import time

import pandas as pd
import pytest
from test_leaderboard import N, _predictions

from tuner.leaderboard.build import build
from tuner.leaderboard.collect import collect, unique_finals
from tuner.tracking.client import TrackingService

T0 = time.time() - 3600


def study(tracker, task, method, status, outcome=None, error=None):
    key = f"{task}:{method}"
    tags = {"stage": "tune", "task": task, "method": method, "backbone": "b", "protocol": "p"}
    tracker.start_run(key, key, tags)
    if status != "RUNNING":
        extra = {"outcome": outcome} if outcome else {}
        tracker.end_run(key, status, {**extra, **({"error": error} if error else {})})
    return key, tags


def trial(tracker, parent, tags, name, status, metrics=None, history=(), devices=None,
          outcome="interrupted"):  # fmt: skip
    """A trial run; ``history``: its epoch_time_s per step (1, 2, ...); a KILLED one ends
    30 s after it started, with ``outcome``."""
    key = f"{parent}/{name}"
    extra = {"devices": devices} if devices is not None else {}
    tracker.start_run(key, name, {**tags, **extra}, parent=parent, start_time=T0)
    for step, seconds in enumerate(history, 1):
        tracker.log_metrics(key, {"epoch_time_s": seconds}, step)
    if metrics:
        tracker.log_metrics(key, metrics, 0)
    if status != "RUNNING":
        tracker.end_run(key, status, {"outcome": outcome} if status == "KILLED" else None,
                        end_time=T0 + 30)  # fmt: skip


def final(tracker, task, method, correct, final_hash, started, name="f"):
    key = f"final/{task}:{method}/{name}"
    tags = {"stage": "final", "task": task, "method": method, "seed": 1000,
            "final_hash": final_hash, "backbone": "b", "protocol": "p"}  # fmt: skip
    tracker.start_run(key, key, tags, params={"lr": 0.01}, start_time=started)
    tracker.log_metrics(key, {"test/acc": correct / N, "device_hours": 0.25}, 1)
    tracker.log_artifact_bytes(key, "test_predictions.parquet", _predictions(correct))
    tracker.end_run(key)
    return tracker.run_id(key)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """An interrupted sweep over 3 tasks × lora/bitfit/linear, started twice on count."""
    root = tmp_path_factory.mktemp("unfinished")
    uri = f"sqlite:///{root / 'mlflow.db'}"
    tracker = TrackingService(uri, "half", artifact_root=(root / "art").as_uri())
    ids = {}
    # synth/objects: finished; lora best
    for method, correct in (("lora", 190), ("bitfit", 120), ("linear", 80)):
        key, tags = study(tracker, "synth/objects", method, "FINISHED")
        trial(tracker, key, tags, "t0", "FINISHED", {"device_hours": 0.5})
        final(tracker, "synth/objects", method, correct, f"h-objects-{method}", T0)
    # synth/count: lora final twice (a double start), bitfit tuned only, linear interrupted
    key, tags = study(tracker, "synth/count", "lora", "FINISHED")
    ids["kept"] = final(tracker, "synth/count", "lora", 100, "h-count-lora", T0)
    ids["copy"] = final(tracker, "synth/count", "lora", 190, "h-count-lora", T0 + 100, "again")
    key, tags = study(tracker, "synth/count", "bitfit", "FINISHED")
    trial(tracker, key, tags, "t0", "FINISHED", {"device_hours": 0.5})
    key, tags = study(tracker, "synth/count", "linear", "KILLED", outcome="interrupted")
    trial(tracker, key, tags, "t0", "KILLED", history=(10.0, 12.0), devices=2)
    trial(tracker, key, tags, "t1", "KILLED")  # no epoch logged: its wall time, 1 device
    # closed as lost by a later start: its end time is not when it stopped, so it counts 0
    trial(tracker, key, tags, "t2", "KILLED", outcome="lost")
    # synth/scenes: lora final, bitfit still RUNNING, linear failed
    study(tracker, "synth/scenes", "lora", "FINISHED")
    final(tracker, "synth/scenes", "lora", 150, "h-scenes-lora", T0)
    study(tracker, "synth/scenes", "bitfit", "RUNNING")
    study(tracker, "synth/scenes", "linear", "FAILED", error="ValueError: every trial failed")
    planned = [(t, m) for t in ("synth/objects", "synth/count", "synth/scenes", "synth/textures")
               for m in ("lora", "bitfit", "linear")]  # fmt: skip
    paths, _ = build(uri, ["half"], root / "board", "half", planned=planned, seeds=1)
    return uri, ids, paths


def test_duplicate_final_runs_count_once_and_the_first_is_kept(planted):
    _, ids, paths = planted
    runs = pd.read_parquet(paths["runs"])
    count = runs[runs["task"] == "synth/count"]
    assert list(count["run_id"]) == [ids["kept"]]
    summary = pd.read_parquet(paths["summary"]).set_index(["task", "method"])
    assert summary.loc[("synth/count", "lora"), "seeds"] == 1
    assert summary.loc[("synth/count", "lora"), "test_acc"] == pytest.approx(100 / N)
    note = paths["markdown"].read_text().split("\n\n")[0]
    assert "1 duplicate final run(s) (same final_hash and seed" in note
    assert f"the first kept; left out: {ids['copy']}." in note


def test_unfinished_sweep_lists_what_is_missing(planted):
    _, _, paths = planted
    note = paths["markdown"].read_text().split("\n\n")[0]
    assert note.startswith("UNFINISHED SWEEP: 7 (task, method) without all final runs")
    for missing in (
        "synth/count × bitfit (tuned, no final run)",
        "synth/count × linear (interrupted)",
        "synth/scenes × bitfit (still RUNNING)",
        "synth/scenes × linear (failed: ValueError: every trial failed)",
        "synth/textures × lora (not started)",
        "synth/textures × bitfit (not started)",
        "synth/textures × linear (not started)",
    ):
        assert missing in note, (missing, note)
    assert "synth/objects ×" not in note


def test_no_winner_on_a_task_with_missing_methods(planted):
    _, _, paths = planted
    summary = pd.read_parquet(paths["summary"])
    complete = summary[summary["task"] == "synth/objects"]
    assert complete.set_index("method").loc["lora", "best"]  # a finished task keeps its winner
    for task in ("synth/count", "synth/scenes"):
        rows = summary[summary["task"] == task]
        assert not rows["best"].any() and not rows["tied"].any(), rows
    table = paths["markdown"].read_text().split("\n\n")[1]
    header = table.splitlines()[0]
    lora = next(line for line in table.splitlines() if line.startswith("| lora |"))
    columns = [c.strip() for c in header.strip("|").split("|")]
    cells = dict(zip(columns, [c.strip() for c in lora.strip("|").split("|")], strict=True))
    assert cells["synth/objects"] == "**95.0**"
    assert cells["synth/count"] == "50.0" and cells["synth/scenes"] == "75.0"
    assert "<u>" not in table.split("synth/objects")[0]


def test_lost_device_hours_count_the_epochs_killed_trials_ran(planted):
    uri, _, paths = planted
    records = collect([TrackingService(uri, "half", create=False)])
    lost = records.lost_hours[("b", "p", "linear")]
    # t0: epochs of 10 s + 12 s on 2 devices; t1: no epoch, 30 s of wall time on 1 device;
    # t2: no epoch, and a crash leftover's end time says nothing: 0
    assert lost == pytest.approx((2 * 22.0 + 30.0) / 3600)
    assert records.tune_hours[("b", "p", "bitfit")] == pytest.approx(1.0)  # two 0.5 h trials
    table = paths["markdown"].read_text()
    assert "lost device-h" in table
    linear = next(line for line in table.splitlines() if line.startswith("| linear |"))
    assert f"| {lost:.3f} |" in linear


def test_unique_finals_keeps_runs_without_a_hash():
    runs = [
        {"run_id": "b", "start_time": 2, "tags": {"final_hash": "h", "seed": "1"}},
        {"run_id": "a", "start_time": 1, "tags": {"final_hash": "h", "seed": "1"}},
        {"run_id": "c", "start_time": 3, "tags": {"final_hash": "h", "seed": "2"}},
        {"run_id": "d", "start_time": 4, "tags": {"seed": "1"}},
        {"run_id": "e", "start_time": 5, "tags": {"seed": "1"}},
    ]
    kept, duplicates = unique_finals(runs)
    assert [r["run_id"] for r in kept] == ["a", "c", "d", "e"]  # the oldest copy; given order
    assert [(d.run_id, d.kept, d.seed) for d in duplicates] == [("b", "a", 1)]
