"""How busy a sweep kept its trial slots, read back from MLflow.

A sweep pays for ``slots × wall`` slot-seconds (slots: how many trials fit at once). Its
busy slot-seconds are the wall time of every trial and final run it started (their MLflow
runs carry true start and end times); the part inside epochs is the sum of their per-epoch
``epoch_time_s``. What is missing from 1.0 is scheduling (Tuner start-up, actor start,
queueing, reporting); what is missing between busy and in-epoch is a run's own set-up and
evaluation. Only runs that started during this sweep count (reused studies cost nothing).
"""

from __future__ import annotations

import math
from typing import Any

from tuner.config import SweepConfig
from tuner.records import PARENT_RUN_TAG
from tuner.tracking.client import TrackingService


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
    busy = in_epochs = 0.0
    runs = 0
    for row in tracker.find({"sweep": sweep}, status=None):
        stage = row["tags"].get("stage")
        if stage not in ("tune", "final") or (
            stage == "tune" and PARENT_RUN_TAG not in row["tags"]
        ):
            continue  # study parents and the leaderboard are bookkeeping, not slot work
        start, end = row["start_time"], row["end_time"]
        if start is None or end is None or start < started * 1000:
            continue
        runs += 1
        busy += (end - start) / 1000
        history = tracker.client.get_metric_history(row["run_id"], "epoch_time_s")
        in_epochs += sum(m.value for m in history)
    capacity = slot_count * wall_s
    return {
        "slots": slot_count,
        "wall_s": round(wall_s, 2),
        "runs": runs,
        "busy_slot_s": round(busy, 2),
        "in_epoch_slot_s": round(in_epochs, 2),
        "busy_fraction": round(busy / capacity, 4) if capacity else 0.0,
        "in_epoch_fraction": round(in_epochs / capacity, 4) if capacity else 0.0,
    }
