"""What a (re-)run of a sweep owes, decided once, before anything runs.

A sweep that starts on a store with earlier work in it must decide, per study, whether to
reuse an identical finished study, continue a run a crashed or interrupted driver left
open (``--resume``), or end such leftovers as lost and tune again; and which final
retrains already exist. ``reconcile`` reads the store with a constant number of searches
(not one per study: a 300-study sweep would pay 300 queries before its first trial) and
returns those decisions as data; ``SweepRun`` carries them out. On ``--resume`` it also
finds the trials whose runs finished after Ray Tune's last save (one more search, and one
metric history per such trial): the resumed run replays them (``tuner.sweep.recorded``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import ray

from tuner.config import SweepConfig
from tuner.records import METRIC, StudySummary
from tuner.sweep.plan import StudySpec
from tuner.sweep.ray_internals import saved_trial_statuses
from tuner.sweep.recorded import RecordedTrial
from tuner.sweep.study import searched_space
from tuner.sweep.warm_start import coerce
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
    #: trial id → the trials a resumed run replays: their runs finished (or diverged) but
    #: Ray Tune's saved state does not have them TERMINATED
    recorded: dict[str, RecordedTrial] = field(default_factory=dict)


def _continuable(run: dict[str, Any]) -> bool:
    """Left by a crash (RUNNING) or by a clean interruption (KILLED, outcome=interrupted)."""
    status, outcome = run["status"], run["tags"].get("outcome")
    return status == "RUNNING" or (status == "KILLED" and outcome == "interrupted")


def _ended(run: dict[str, Any]) -> bool:
    """A trial run that ended with a result: FINISHED, or FAILED as diverged."""
    status, outcome = run["status"], run["tags"].get("outcome")
    return status == "FINISHED" or (status == "FAILED" and outcome == "diverged")


def recorded_trial(
    run: dict[str, Any], study: StudySpec, history: list[tuple[int, float]]
) -> RecordedTrial | None:
    """A finished trial run as a replay reports it; None if its configuration no longer
    fits the study's space (then it is not replayed)."""
    space = searched_space(study)
    params = {k: run["params"][k] for k in space if k in run["params"]}
    config = {k: coerce(v, space[k]) for k, v in params.items()}
    by_step = {int(step): float(value) for step, value in history}  # a re-logged step: last
    epochs = int(float(run["tags"].get("epochs_run") or max(by_step, default=0)))
    if not by_step or any(v is None for v in config.values()):
        return None
    curve, value = [], by_step[min(by_step)]
    for epoch in range(1, epochs + 1):  # a step never logged holds the one before
        value = by_step.get(epoch, value)
        curve.append(value)
    metrics = run["metrics"]
    return RecordedTrial(
        trial_id=run["tags"]["trial_id"],
        study=study.key,
        config=config,
        curve=tuple(curve),
        diverged=run["tags"].get("outcome") == "diverged" or bool(metrics.get("diverged")),
        trainable_params=int(metrics.get("trainable_params", 0)),
        started=int(run.get("start_time") or 0),
        params=params,
    )


def _recorded(
    cfg: SweepConfig, runs: list[dict[str, Any]], planned: dict[str, StudySpec], tracker: Any
) -> dict[str, RecordedTrial]:
    """The ended trial runs of the sweep's studies that Ray Tune's saved state does not hold
    as TERMINATED (the restore would run them again): one metric history each."""
    saved = saved_trial_statuses(cfg.experiment_path)
    if saved is None:  # nothing to restore: the studies start again
        return {}
    replay = [
        r
        for r in runs
        if _ended(r)
        and r["tags"].get("trial_id")
        and r["tags"].get("study") in planned
        and saved.get(r["tags"]["trial_id"]) != "TERMINATED"
    ]
    histories = ray.get([tracker.metric_history.remote(r["run_id"], METRIC) for r in replay])
    out = {}
    for run, history in zip(replay, histories, strict=True):
        trial = recorded_trial(run, planned[run["tags"]["study"]], history)
        if trial is not None:
            out[trial.trial_id] = trial
    return out


def reconcile(
    cfg: SweepConfig, studies: list[StudySpec], tracker: Any, resume: bool
) -> Reconciliation:
    """Decide, from three searches of the store (four on ``--resume``), what this run of the
    sweep reuses, adopts, ends, replays and tunes. ``tracker`` is the sweep's tracker actor."""
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
    queued: dict[str, StudySpec] = {}
    for study in studies:
        run = finished.get(study.hash)
        if run is None:
            out.queue.append(study)
            queued[study.key] = study
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
    if resume and queued:
        done = f"tags.sweep = '{name}' and tags.stage = 'tune' and attributes.status = 'FINISHED'"
        ended = ray.get(tracker.search.remote(f"{done} and tags.trial_id LIKE '%'"))
        # a study reused now may have finished after the save: its resumed trials replay too
        out.recorded = _recorded(cfg, ended + left, {s.key: s for s in studies}, tracker)
    return out
