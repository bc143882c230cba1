"""What an unfinished sweep is missing, and what its lost trials cost.

A leaderboard built while a sweep runs, or after it was interrupted or crashed, used to
show the rows that happened to have final runs, with a bold winner among them, and say
nothing of the studies still tuning or tuned without their final runs. ``missing_studies``
lists every (task, row) that the experiment's study runs (or the sweep's plan) promise
and its final runs do not deliver, with the study's state; the summary then marks no
winner on those tasks and the note names them.

Trials killed with their sweep never logged ``device_hours`` (the callback logs it when a
trial ends), so their cost read as zero; ``spent_hours`` counts what they did run: the
sum of their ``epoch_time_s`` steps, or their wall time (when their end time is when they
stopped: an interrupted run, not a crash leftover closed later), times the devices each
trial held (the run's ``devices`` tag; 1 for runs logged before it existed).
"""

from __future__ import annotations

from typing import Any

from tuner.leaderboard.collect import Missing, RowKey, row_key
from tuner.tracking.client import TrackingService
from tuner.tracking.names import PARENT_RUN_TAG

NOT_STARTED = "not started"


def study_state(run: dict[str, Any], finals: int, seeds: int) -> tuple[str, str]:
    """(state, detail) of a study run whose (task, row) lacks final runs."""
    tags, status = run["tags"], run["status"]
    partial = f"{finals} of {seeds} final runs" if finals else ""
    if status == "RUNNING":
        return "running", ", ".join(filter(None, ["still RUNNING", partial]))
    if status == "KILLED":
        state = {"interrupted": "interrupted", "lost": "lost"}.get(
            tags.get("outcome", ""), "killed"
        )
        return state, ", ".join(filter(None, [state, partial]))
    if status == "FAILED":
        error = tags.get("error", "")
        return "failed", f"failed: {error}" if error else "failed"
    return "tuned", partial or "tuned, no final run"


def missing_studies(
    trackers: list[TrackingService],
    finals: list[dict[str, Any]],
    planned: list[tuple[str, str]] | None = None,
    seeds: int | None = None,
) -> list[Missing]:
    """Each (task, row) with a study run (or in ``planned``) but fewer final runs than
    ``seeds`` (default: at least one), described by its newest study run's state.

    ``finals``: the leaderboard's rows (one per kept final run: task, backbone, protocol,
    method). ``planned``: (task, method) pairs of the sweep, for studies never started."""
    have: dict[tuple[str, RowKey], int] = {}
    for row in finals:
        key = (row["task"], (row["backbone"], row["protocol"], row["method"]))
        have[key] = have.get(key, 0) + 1
    newest: dict[tuple[str, RowKey], dict[str, Any]] = {}
    for tracker in trackers:
        for run in tracker.find({"stage": "tune"}, status=None):
            tags = run["tags"]
            if PARENT_RUN_TAG in tags or "task" not in tags or "method" not in tags:
                continue
            key = (tags["task"], row_key(tags))
            if key not in newest or (run["start_time"] or 0) > (newest[key]["start_time"] or 0):
                newest[key] = run
    out = []
    for (task, row), run in newest.items():
        count = have.get((task, row), 0)
        if count >= (seeds or 1):
            continue
        state, detail = study_state(run, count, seeds or 1)
        out.append(Missing(task, row, state, detail))
    known = {(task, row[2].split(" (")[0]) for task, row in [*newest, *have]}
    for task, method in planned or []:
        if (task, method) not in known:
            out.append(Missing(task, ("", "", method), NOT_STARTED))
    return sorted(out, key=lambda m: (m.task, m.key))


def spent_hours(tracker: TrackingService, run: dict[str, Any]) -> float:
    """A trial's device-hours: its logged ``device_hours``, else what its epochs took
    (``epoch_time_s`` per step, the last value where a resumed trial logged a step
    twice), else its wall time (``wall_seconds``); times the devices it held."""
    if "device_hours" in run["metrics"]:
        return float(run["metrics"]["device_hours"])
    devices = float(run["tags"].get("devices", 1.0))
    steps = dict(tracker.metric_history(run["run_id"], "epoch_time_s"))
    seconds = float(sum(steps.values()))
    if not seconds:
        seconds = wall_seconds(run)
    return seconds * devices / 3600


def wall_seconds(run: dict[str, Any]) -> float:
    """Start to end of a run, when its end is when it stopped: not for ``outcome=lost``,
    which a later start closed, perhaps days after its driver died (0 then)."""
    start, end = run.get("start_time"), run.get("end_time")
    if not start or not end or run["tags"].get("outcome") == "lost":
        return 0.0
    return (end - start) / 1000
