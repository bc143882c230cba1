"""MLflow records → the rows the leaderboard is built from (``collect``).

Built only from what MLflow holds (final runs, their test predictions, trial costs), so the
same code serves ``petl-sweep run`` and ``petl-sweep leaderboard --experiment ...`` on any
tracking server, across several sweeps. Numbers are test accuracies of the best *val*
config per (task, method), retrained on train800val200, mean ± std over seeds. Two means are
reported and always labelled: *flat* (over tasks) and *group* (mean of the per-group means,
VTAB's Natural / Specialized / Structured). Per task, bold = best and underline = tied with
the best under a paired bootstrap over test examples.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from tuner.records import PARENT_RUN_TAG
from tuner.tracking.artifacts import read_predictions
from tuner.tracking.client import TrackingService

PREDICTIONS = "test_predictions.parquet"


@dataclass
class Records:
    """Final runs (one row per seed) and the per-example correctness behind them."""

    finals: pd.DataFrame
    correct: dict[tuple[str, str], list[np.ndarray]] = field(default_factory=dict)
    tune_hours: dict[str, float] = field(default_factory=dict)
    #: Device-hours of trials whose study never finished (a crash): spent, not useful
    lost_hours: dict[str, float] = field(default_factory=dict)


def collect(trackers: list[TrackingService]) -> Records:
    """Read final runs, their predictions and tuning costs from one or more experiments."""
    rows: list[dict[str, Any]] = []
    correct: dict[tuple[str, str], list[np.ndarray]] = {}
    tune_hours: dict[str, float] = {}
    lost_hours: dict[str, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for tracker in trackers:
            for run in tracker.find({"stage": "final"}):
                tags, metrics = run["tags"], run["metrics"]
                task, method = tags["task"], tags["method"]
                rows.append(
                    {
                        "task": task,
                        "method": method,
                        "seed": int(tags.get("seed", 0)),
                        "test_acc": metrics["test/acc"],
                        "trainable_params": int(metrics.get("trainable_params", 0)),
                        "trainable_params_without_head": int(
                            metrics.get("trainable_params_without_head", 0)
                        ),
                        "device_hours": metrics.get("device_hours", 0.0),
                        "experiment": tracker.experiment_id,
                        "run_id": run["run_id"],
                        "hp": ",".join(
                            f"{k}={v}"
                            for k, v in sorted(run["params"].items())
                            if k not in ("seed", "epochs", "batch_size")
                        ),
                    }
                )
                path = tracker.download(run["run_id"], PREDICTIONS, Path(tmp) / run["run_id"])
                logits, labels = read_predictions(path)
                correct.setdefault((task, method), []).append(
                    (logits.argmax(1) == labels).numpy().astype(np.float64)
                )
            split_tuning_hours(tracker, tune_hours, lost_hours)
    return Records(pd.DataFrame(rows), correct, tune_hours, lost_hours)


def split_tuning_hours(
    tracker: TrackingService, useful: dict[str, float], lost: dict[str, float]
) -> None:
    """Add each trial's device-hours per method to ``useful`` when its study finished, and
    to ``lost`` when the study was killed or failed (work a crash threw away)."""
    runs = tracker.find({"stage": "tune"}, status=None)
    studies = {r["run_id"]: r["status"] for r in runs if PARENT_RUN_TAG not in r["tags"]}
    for run in runs:
        parent = run["tags"].get(PARENT_RUN_TAG)
        if parent is None:
            continue
        method, hours = run["tags"]["method"], run["metrics"].get("device_hours", 0.0)
        kept = studies.get(parent) == "FINISHED" and run["tags"].get("outcome") != "lost"
        bucket = useful if kept else lost
        bucket[method] = bucket.get(method, 0.0) + hours
