"""How busy a sweep kept its trial slots, read back from MLflow.

A sweep pays for ``slots × wall`` slot-seconds (slots: how many trials fit at once). Its
busy slot-seconds are the wall time of every trial and final run it started (their MLflow
runs carry true start and end times); the part inside epochs is the sum of their per-epoch
``epoch_time_s`` (training) and ``eval_time_s`` (the validation pass ASHA needs each epoch),
which each run logs once at its end (``epoch_time_s_total``, ...): one search for the sweep,
not a metric history per run (at study 000's size, 30,000 reads and minutes at the end).
What is missing from 1.0 is scheduling (Ray Tune's start-up, actor starts,
idle slots at the end, reporting); what is missing between busy and in-epoch is a run's own
set-up. Only runs that started during this sweep count (reused studies cost nothing).

Where a study's start-up goes is reported too: the wait from its parent run's start to its
first trial's start, and the part of it spent opening the study (``setup_s``: MLflow run,
warm start, searcher, prepare pass); the rest is waiting for a slot.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

from tuner.config import SweepConfig
from tuner.records import EPOCH_TIMES
from tuner.tracking.client import TrackingService
from tuner.tracking.names import PARENT_RUN_TAG


def slots(cfg: SweepConfig, cluster: dict[str, float]) -> int:
    """Trials that fit at once: GPUs / gpus_per_trial with GPUs, else CPUs / cpus_per_trial."""
    res = cfg.resources
    if res.gpus_per_trial:
        return max(1, math.floor(cluster.get("GPU", 0) / res.gpus_per_trial))
    return max(1, math.floor(cluster.get("CPU", 1) / res.cpus_per_trial))


def slot_utilisation(
    tracker: TrackingService, sweep: str, started: float, wall_s: float, slot_count: int
) -> dict[str, Any]:
    """Busy and in-epoch fractions of ``slot_count × wall_s`` for runs of ``sweep`` that
    started at or after ``started`` (epoch seconds)."""
    busy = in_epochs = checkpoints = 0.0
    runs = 0
    parents: dict[str, dict[str, Any]] = {}
    first_trial: dict[str, float] = {}
    for row in tracker.find({"sweep": sweep}, status=None):
        stage = row["tags"].get("stage")
        start, end = row["start_time"], row["end_time"]
        if start is None or start < started * 1000:
            continue
        if stage == "tune" and PARENT_RUN_TAG not in row["tags"]:
            parents[row["run_id"]] = row  # a study: bookkeeping, timed below
            continue
        if stage not in ("tune", "final") or end is None:
            continue  # the leaderboard is bookkeeping, not slot work
        if stage == "tune":
            parent = row["tags"][PARENT_RUN_TAG]
            first_trial[parent] = min(first_trial.get(parent, math.inf), start / 1000)
        runs += 1
        busy += (end - start) / 1000
        for name in EPOCH_TIMES:
            total = row["metrics"].get(f"{name}_total")
            if total is None:  # a run logged before the totals: its history, read whole
                total = sum(m.value for m in tracker.client.get_metric_history(row["run_id"], name))
            in_epochs += total if name != "checkpoint_s" else 0.0
            checkpoints += total if name == "checkpoint_s" else 0.0
    waits = [first_trial[p] - r["start_time"] / 1000 for p, r in parents.items()
             if p in first_trial]  # fmt: skip
    setups = [r["metrics"]["setup_s"] for r in parents.values() if "setup_s" in r["metrics"]]
    capacity = slot_count * wall_s
    return {
        "slots": slot_count,
        "wall_s": round(wall_s, 2),
        "runs": runs,
        "busy_slot_s": round(busy, 2),
        "in_epoch_slot_s": round(in_epochs, 2),
        "busy_fraction": round(busy / capacity, 4) if capacity else 0.0,
        "in_epoch_fraction": round(in_epochs / capacity, 4) if capacity else 0.0,
        "checkpoint_slot_s": round(checkpoints, 2),
        # a study's parent run start → its first trial's start; the part spent opening it
        "study_wait_median_s": round(statistics.median(waits), 2) if waits else 0.0,
        "study_wait_max_s": round(max(waits), 2) if waits else 0.0,
        "study_setup_median_s": round(statistics.median(setups), 2) if setups else 0.0,
    }
