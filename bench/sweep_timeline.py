"""How many trial and final runs a finished sweep had in flight, over time, from MLflow.

``petl-sweep run`` prints the sweep's busy fraction over its whole wall time; this splits
the picture: the share of time from the first run's start to the last run's end with 0, 1,
2, ... runs in flight, and the busy fraction over that span alone (what is left of the
sweep's wall time is its start-up before the first trial and the leaderboard after).

Usage: ``python bench/sweep_timeline.py --store results/mlflow.db --sweep quickstart
[--slots 2]``.
"""

from __future__ import annotations

import argparse

import numpy as np

from tuner.tracking.client import TrackingService
from tuner.tracking.names import PARENT_RUN_TAG


def run_spans(store: str, sweep: str) -> list[tuple[float, float]]:
    """(start, end) epoch seconds of every finished trial and final run of ``sweep``."""
    tracker = TrackingService(f"sqlite:///{store}", sweep, create=False)
    spans = []
    for row in tracker.find({"sweep": sweep}, status=None):
        stage = row["tags"].get("stage")
        is_study = stage == "tune" and PARENT_RUN_TAG not in row["tags"]
        if stage in ("tune", "final") and not is_study and row["end_time"]:
            spans.append((row["start_time"] / 1000, row["end_time"] / 1000))
    return spans


def in_flight(spans: list[tuple[float, float]], step: float = 0.1) -> dict[int, float]:
    """Share of the span (first start → last end) with k runs in flight, for every k."""
    first, last = min(s for s, _ in spans), max(e for _, e in spans)
    clock = np.arange(first, last, step)
    count = np.zeros_like(clock)
    for start, end in spans:
        count += (clock >= start) & (clock < end)
    return {int(k): float(np.mean(count == k)) for k in np.unique(count)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--store", required=True, help="the sweep's SQLite MLflow file")
    parser.add_argument("--sweep", required=True)
    parser.add_argument("--slots", type=int, default=2)
    args = parser.parse_args()
    spans = run_spans(args.store, args.sweep)
    span = max(e for _, e in spans) - min(s for s, _ in spans)
    shares = in_flight(spans)
    busy = sum(k * share for k, share in shares.items()) / args.slots
    print(f"{len(spans)} runs over {span:.1f} s from the first start to the last end")
    for k, share in shares.items():
        print(f"  {k} in flight: {share:.3f}")
    print(f"busy over that span: {busy:.3f} of {args.slots} slots")


if __name__ == "__main__":
    main()
