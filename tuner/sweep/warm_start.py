"""Warm start: seed a study's TPE with what the same method chose on other tasks.

A method's good region (learning rate, rank, scale) moves less between tasks than TPE's
first random trials spread. With ``search.warm_start: true`` a study asks MLflow for the
finished studies of the same method on *other* tasks in the experiment, takes the chosen
configurations of the best ``search.warm_start_top`` of them (by their best val accuracy),
and hands them to Optuna as its first trials (``points_to_evaluate``, i.e.
``enqueue_trial``). Their trial runs carry ``warm_start=<source task>``. A study asks when
it opens (just before its first trial), so it sees the studies finished earlier in the same
sweep as well as earlier sweeps; studies open at the same time do not see each other.
"""

from __future__ import annotations

import math
from typing import Any

from tuner.records import METRIC
from tuner.sweep.spaces import Domain
from tuner.tracking.names import PARENT_RUN_TAG

#: Tag on a trial run whose configuration came from another task's study.
WARM_TAG = "warm_start"


def coerce(value: str, domain: Domain) -> Any | None:
    """An MLflow param string as a value of ``domain``, or None if it does not fit."""
    if domain.kind in ("choice", "fixed"):
        for option in domain.args:
            if str(option) == value:
                return option
        return None
    try:
        number = int(float(value)) if domain.kind == "int" else float(value)
    except ValueError:
        return None
    low, high = domain.args
    return number if low <= number <= high and math.isfinite(number) else None


def warm_points(
    studies: list[dict[str, Any]], task: str, space: dict[str, Domain], top: int
) -> list[tuple[dict[str, Any], str]]:
    """(configuration, source task) of the best finished studies on other tasks.

    ``studies`` are the method's study parent runs (``TrackingService.find`` rows). A point
    must give every key of ``space`` a value inside its domain, else it is skipped."""
    ranked = sorted(
        (
            r
            for r in studies
            if PARENT_RUN_TAG not in r["tags"]
            and r["tags"].get("task") != task
            and math.isfinite(r["metrics"].get(METRIC, math.nan))
        ),
        key=lambda r: r["metrics"][METRIC],
        reverse=True,
    )
    points: list[tuple[dict[str, Any], str]] = []
    for run in ranked:
        config = {k: coerce(run["params"].get(f"best.{k}", ""), d) for k, d in space.items()}
        if any(v is None for v in config.values()) or any(config == p for p, _ in points):
            continue
        points.append((config, run["tags"]["task"]))
        if len(points) == top:
            break
    return points
