"""Slot utilisation of a sweep, from planted MLflow runs with known times."""

from __future__ import annotations

import pytest

from tuner.config import parse_config
from tuner.sweep.utilisation import slot_utilisation, slots
from tuner.tracking.client import TrackingService

T0 = 1_000_000.0


def test_busy_and_in_epoch_fractions_count_only_this_sweeps_trials_and_finals(
    tmp_path, monkeypatch
):
    tracker = TrackingService(f"sqlite:///{tmp_path / 'm.db'}", "util")
    tags = {"sweep": "s", "stage": "tune"}
    tracker.start_run("study", "study", tags, start_time=T0)  # bookkeeping: not counted
    tracker.log_metrics("study", {"setup_s": 1.5}, 0)
    for key, (start, end, epochs) in {"a": (0, 40, [10, 10, 10]), "b": (5, 25, [8, 8])}.items():
        tracker.start_run(key, key, tags, parent="study", start_time=T0 + start)
        for step, seconds in enumerate(epochs, 1):
            tracker.log_metrics(key, {"epoch_time_s": seconds, "checkpoint_s": 0.5}, step)
        tracker.end_run(key, end_time=T0 + end)
    tracker.start_run("f", "final", {"sweep": "s", "stage": "final"}, start_time=T0 + 40)
    tracker.log_metrics("f", {"epoch_time_s": 15.0}, 1)
    tracker.end_run("f", end_time=T0 + 60)
    # logged since the totals: its sums, one value each, and no history to read
    tracker.start_run("c", "c", tags, parent="study", start_time=T0 + 10)
    totals = {"epoch_time_s_total": 9.0, "eval_time_s_total": 3.0, "checkpoint_s_total": 1.0}
    tracker.log_metrics("c", totals, 0)
    tracker.end_run("c", end_time=T0 + 30)
    tracker.start_run("old", "old", tags, parent="study", start_time=T0 - 100)  # reused
    tracker.end_run("old", end_time=T0 - 50)
    tracker.start_run("lb", "leaderboard", {"sweep": "s", "stage": "leaderboard"}, start_time=T0)
    tracker.end_run("lb", end_time=T0 + 61)
    histories = []
    read = tracker.client.get_metric_history

    def counted(run_id, name):
        histories.append(run_id)
        return read(run_id, name)

    monkeypatch.setattr(tracker.client, "get_metric_history", counted)
    use = slot_utilisation(tracker, "s", started=T0, wall_s=50.0, slot_count=2)
    assert use["runs"] == 4
    assert use["busy_slot_s"] == pytest.approx(40 + 20 + 20 + 20)
    assert use["in_epoch_slot_s"] == pytest.approx(30 + 16 + 15 + 12)
    assert use["busy_fraction"] == pytest.approx(100 / 100)
    assert use["in_epoch_fraction"] == pytest.approx(73 / 100)
    assert use["checkpoint_slot_s"] == pytest.approx(5 * 0.5 + 1.0)
    assert len(histories) == 3 * 3  # a, b and f have no totals; c is read from the search
    # the study's first trial started 0 s after it; opening the study took 1.5 s
    assert use["study_wait_median_s"] == 0.0 and use["study_setup_median_s"] == 1.5


def test_slots_follow_the_resources():
    cfg = parse_config({"name": "x", "tasks": ["synth/count"], "methods": ["lora"],
                        "resources": {"cpus_per_trial": 1.5}})  # fmt: skip
    assert slots(cfg, {"CPU": 4.0}) == 2
    gpu = cfg.model_copy(
        update={"resources": cfg.resources.model_copy(update={"gpus_per_trial": 0.25})}
    )
    assert slots(gpu, {"CPU": 4.0, "GPU": 2.0}) == 8
