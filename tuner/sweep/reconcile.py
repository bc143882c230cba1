"""What a (re-)run of a sweep owes, decided once, before anything runs.

A sweep that starts on a store with earlier work in it must decide, per study, whether to
reuse an identical finished study, continue a run a crashed or interrupted driver left
open (``--resume``), or end such leftovers as lost and tune again; and which final
retrains already exist. ``reconcile`` reads the store with a constant number of searches
(not one per study: a 300-study sweep would pay 300 queries before its first trial) and
returns those decisions as data; ``SweepRun`` carries them out.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import ray

from tuner.config import SweepConfig
from tuner.records import StudySummary
from tuner.sweep.plan import StudySpec
from tuner.tracking.names import PARENT_RUN_TAG, RUN_KEY


@dataclass
class Reconciliation:
    """The decisions of ``reconcile``, one field per kind."""

    #: study key → the summary of an identical study already finished (not tuned again)
    reuse: dict[str, StudySummary] = field(default_factory=dict)
    #: the studies to tune, in plan order
    queue: list[StudySpec] = field(default_factory=list)
    #: ``final_hash`` of every finished final run (a retrain with one of these is skipped)
    finished_finals: set[str] = field(default_factory=set)
    #: our run key → (run id, status) of runs a resumed sweep continues
    adopt: dict[str, tuple[str, str]] = field(default_factory=dict)
    #: trial id → run key of the adopted trial runs (ended as lost if Ray Tune lost them)
    adopted_trials: dict[str, str] = field(default_factory=dict)
    #: run ids an earlier driver left open that nothing continues: ended as KILLED/lost
    stale: list[str] = field(default_factory=list)


def _continuable(run: dict[str, Any]) -> bool:
    """Left by a crash (RUNNING) or by a clean interruption (KILLED, outcome=interrupted)."""
    status, outcome = run["status"], run["tags"].get("outcome")
    return status == "RUNNING" or (status == "KILLED" and outcome == "interrupted")


def reconcile(
    cfg: SweepConfig, studies: list[StudySpec], tracker: Any, resume: bool
) -> Reconciliation:
    """Decide, from three searches of the store, what this run of the sweep reuses, adopts,
    ends and tunes. ``tracker`` is the sweep's tracker actor."""
    name = cfg.name
    searches = [
        "tags.study_hash LIKE '%'",  # every study run of the experiment (reuse is by hash)
        "tags.stage = 'final' and attributes.status = 'FINISHED'",
        f"tags.sweep = '{name}' and attributes.status != 'FINISHED'",  # this sweep's leftovers
    ]
    study_runs, finals, left = ray.get([tracker.search.remote(f) for f in searches])
    out = Reconciliation(finished_finals={r["tags"].get("final_hash", "") for r in finals})
    finished = {}  # study hash → newest finished study run (searches return newest first)
    for run in study_runs:
        if run["status"] == "FINISHED" and PARENT_RUN_TAG not in run["tags"]:
            finished.setdefault(run["tags"]["study_hash"], run)
    queued: set[str] = set()
    for study in studies:
        run = finished.get(study.hash)
        if run is None:
            out.queue.append(study)
            queued.add(study.key)
            continue
        data = ray.get(tracker.load_dict.remote(run["run_id"], "summary.json"))
        out.reuse[study.key] = StudySummary.from_json(data)
    for run in left:
        tags = run["tags"]
        if tags.get("stage") == "lease":  # the sweep's own lease (tuner.tracking.lease)
            continue
        keep = (
            resume
            and _continuable(run)
            and tags.get("stage") == "tune"
            and tags.get("study") in queued
            and RUN_KEY in tags
        )
        if keep:
            out.adopt[tags[RUN_KEY]] = (run["run_id"], run["status"])
            if tags.get("trial_id"):
                out.adopted_trials[tags["trial_id"]] = tags[RUN_KEY]
        elif run["status"] == "RUNNING":
            out.stale.append(run["run_id"])
    return out
