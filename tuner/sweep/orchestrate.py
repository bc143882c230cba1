"""Plan → one shared Ray Tune run (a TPE searcher and ASHA per study) → final retrains.

Every study tunes in one Ray Tune run (``tuner.sweep.shared_run``), run as one Ray task on
the driver's node; a study's final retrains start as soon as its end is posted to the
progress board, while later studies tune. The driver keeps the bookkeeping in one
``SweepRun``; the tracker and progress actors are named so that callbacks (and restored
callbacks after ``--resume``) find them.

Resumable: a study or final run whose content hash already finished in MLflow is not run
again, and the shared run continues from its saved state, so a crashed sweep restarts where
it stopped.
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray
from ray._private import ray_constants
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from tuner.config import SweepConfig
from tuner.records import PARENT_RUN_TAG, FinalResult, StudySummary, first_line
from tuner.sweep.callbacks import actor_name
from tuner.sweep.final import final_hash, log_final, run_final
from tuner.sweep.plan import StudySpec, check_backbone, planned_studies, prepare_data
from tuner.sweep.progress import ProgressBoard
from tuner.sweep.shared_run import run_shared
from tuner.sweep.study import study_tags
from tuner.sweep.utilisation import slots
from tuner.tracking.buffered import BufferedTracker
from tuner.tracking.client import check_access

log = logging.getLogger("petl_sweep")


@dataclass
class SweepResult:
    """What a sweep did: every study's summary, every final run, what was reused."""

    studies: dict[str, StudySummary] = field(default_factory=dict)
    finals: list[FinalResult] = field(default_factory=list)
    reused_studies: int = 0
    reused_finals: int = 0
    wall_s: float = 0.0
    #: When the sweep started (epoch seconds) and how many trials fit at once
    started_at: float = 0.0
    slots: int = 1
    #: The leaderboard's files, once written (``tuner.sweep.pipeline``)
    outputs: dict[str, Path] = field(default_factory=dict)
    #: Study key → why it has no result (an exception, or no trial that finished)
    failed: dict[str, str] = field(default_factory=dict)

    @property
    def trials(self) -> list[Any]:
        return [t for s in self.studies.values() for t in s.trials]


def init_ray(cfg: SweepConfig) -> None:
    if ray.is_initialized():
        return
    # Inside a Ray job (``ray job submit`` / RayJob) RAY_ADDRESS names the cluster to join.
    address = cfg.ray.address or os.environ.get("RAY_ADDRESS")
    if address:
        ray.init(address=address, log_to_driver=False)
    else:
        with loopback_only():
            ray.init(
                num_cpus=cfg.ray.num_cpus,
                include_dashboard=False,
                log_to_driver=False,
            )


@contextlib.contextmanager
def loopback_only() -> Iterator[None]:
    """Start a local Ray that listens on 127.0.0.1 only.

    Ray 2.60's gRPC servers (GCS, raylet, workers) bind every interface and its agents the
    machine's address, token auth or not. The one switch that keeps them all on loopback is
    Ray's single-machine mode (what it uses on macOS/Windows): the node address becomes
    127.0.0.1 and every process it starts binds that. Only the start needs it; the switch is
    put back so a later ``ray.init(address=...)`` in this process joins clusters as usual."""
    before = ray_constants.ENABLE_RAY_CLUSTER
    ray_constants.ENABLE_RAY_CLUSTER = False
    try:
        yield
    finally:
        ray_constants.ENABLE_RAY_CLUSTER = before


def finished_study(tracker: Any, study: StudySpec, resume: bool = False) -> StudySummary | None:
    """The summary of an identical study already finished in MLflow, if any."""
    runs = ray.get(tracker.find.remote({"study_hash": study.hash, "stage": "tune"}))
    parents = [r for r in runs if PARENT_RUN_TAG not in r["tags"]]
    if not parents:
        if not resume:  # a resumed study continues its RUNNING runs instead
            ray.get(tracker.mark_stale.remote({"study_hash": study.hash}))
            # its trial and final runs carry the study key, not the hash
            ray.get(tracker.mark_stale.remote({"study": study.key}))
        return None
    return StudySummary.from_json(
        ray.get(tracker.load_dict.remote(parents[0]["run_id"], "summary.json"))
    )


def on_driver_node() -> NodeAffinitySchedulingStrategy:
    """Pin to the driver's node: the tracker, the progress board and the study loops hold a
    sweep's bookkeeping, and on a worker node they would die with it. Trials and final
    retrains run anywhere and are retried from their checkpoints when a node is lost."""
    return NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=False)


def start_tracker(cfg: SweepConfig, resume: bool = False) -> Any:
    """The sweep's one tracker actor (every MLflow write goes through it), on the driver's
    node, journaling to ``out_dir/.tracking-journal/<name>`` while MLflow is away."""
    return (
        ray.remote(num_cpus=0)(BufferedTracker)
        .options(name=actor_name(cfg.name, "tracker"), scheduling_strategy=on_driver_node())
        .remote(
            cfg.tracking_uri,
            cfg.experiment,
            cfg.artifact_root,
            resume=resume,
            journal=Path(cfg.out_dir).resolve() / ".tracking-journal" / cfg.name,
        )
    )


class SweepRun:
    """The driver's state of one sweep: studies in flight, final runs in flight, results."""

    def __init__(self, cfg: SweepConfig, studies: list[StudySpec], datasets: dict, resume: bool):
        self.cfg, self.datasets, self.resume = cfg, datasets, resume
        here = on_driver_node()
        self.tracker = start_tracker(cfg, resume)
        self.tracking_down, self.last_check, self.outages_seen = False, 0.0, 0
        self.notify: Callable[[str], None] | None = None
        self.board = (
            ray.remote(num_cpus=0)(ProgressBoard)
            .options(name=actor_name(cfg.name, "board"), scheduling_strategy=here)
            .remote([s.key for s in studies], cfg.tune.num_samples)
        )
        self.tune_task = ray.remote(num_cpus=0, max_retries=0)(run_shared).options(
            scheduling_strategy=here
        )
        self.final_task = ray.remote(max_retries=1)(run_final).options(
            num_cpus=cfg.resources.cpus_per_trial, num_gpus=cfg.resources.gpus_per_trial
        )
        self.queue: list[StudySpec] = []
        #: the shared Ray Tune run while it runs, and the studies it still owes an end
        self.tuning: Any = None
        self.owed: dict[str, StudySpec] = {}
        self.finals: dict[Any, tuple[str, str]] = {}
        self.result = SweepResult()
        for study in studies:
            cached = finished_study(self.tracker, study, resume)
            if cached is None:
                self.queue.append(study)
            else:
                self.result.reused_studies += 1
                self.study_done(cached, cached=True)

    def study_done(self, summary: StudySummary, cached: bool) -> None:
        """Record a study and start its final retrains (those not already in MLflow)."""
        self.result.studies[summary.study] = summary
        if not summary.best:
            self.result.failed[summary.study] = summary.error or "no result"
            self.board.update.remote(summary.study, status="no result")
            return
        for i in range(self.cfg.final.seeds):
            key = final_hash(self.cfg, summary, i)
            if ray.get(self.tracker.find.remote({"final_hash": key})):
                self.result.reused_finals += 1
                continue
            self.finals[self.final_task.remote(self.cfg, summary, i)] = (summary.study, key)
        pending = any(study == summary.study for study, _ in self.finals.values())
        if cached:
            self.board.trial_result.remote(summary.study, summary.best.val_acc)
        status = ("cached" if cached else "final") if pending else "done"
        self.board.update.remote(summary.study, status=status)

    def study_failed(self, study: StudySpec, reason: str, detail: str) -> None:
        """A study that could not start (or whose run ended without it): FAILED in MLflow
        with its error, its leftover runs ended as lost, the other studies unaffected."""
        self.result.failed[study.key] = reason
        tags = {**study_tags(self.cfg, study), "study_hash": study.hash}
        ray.get(self.tracker.fail_run.remote(study.key, study.key, tags, reason, detail))
        ray.get(self.tracker.mark_stale.remote({"study": study.key, "sweep": self.cfg.name}))
        self.board.update.remote(study.key, status="failed")

    def final_done(self, ref: Any) -> None:
        study_key, key = self.finals.pop(ref)
        try:
            result: FinalResult = ray.get(ref)
        except Exception as err:  # a final retrain that raised: the others go on
            self.result.failed[study_key] = f"final retrain: {first_line(err)}"
            self.board.update.remote(study_key, status="failed")
            return
        result.final_hash = key
        log_final(self.cfg, self.tracker, result, self.datasets[result.spec.task])
        self.result.finals.append(result)
        seeds = [r.test_acc for r in self.result.finals if r.study == study_key]
        left = any(study == study_key for study, _ in self.finals.values())
        self.board.update.remote(
            study_key, final=sum(seeds) / len(seeds), status="final" if left else "done"
        )

    def step(self) -> None:
        """Start the shared run once, take the studies it ended, handle one finished task."""
        if self.queue:
            self.owed = {study.key: study for study in self.queue}
            self.tuning = self.tune_task.remote(self.cfg, self.queue, self.resume)
            self.queue = []
        self.take_posts()
        pending = ([self.tuning] if self.tuning is not None else []) + list(self.finals)
        ready, _ = ray.wait(pending, num_returns=1, timeout=0.5)
        for ref in ready:
            if ref is not self.tuning:
                self.final_done(ref)
                continue
            self.tuning = None
            try:
                leftovers = ray.get(ref)
            except Exception as err:  # the shared run itself failed: its open studies too
                leftovers, reason = [], f"the tuning run failed: {first_line(err)}"
            else:
                reason = "the tuning run ended before this study started"
            self.take_posts()
            for data in leftovers:
                self.posted_done(data)
            for study in list(self.owed.values()):
                self.owed.pop(study.key)
                self.study_failed(study, reason, reason)

    def take_posts(self) -> None:
        """Studies the shared run ended (done or failed to start) since the last look."""
        for kind, payload in ray.get(self.board.take.remote()):
            if kind == "done":
                self.posted_done(payload)
            elif payload[0] in self.owed:
                key, reason, detail = payload
                self.study_failed(self.owed.pop(key), reason, detail)

    def posted_done(self, data: dict[str, Any]) -> None:
        if self.owed.pop(data["study"], None) is not None:
            self.study_done(StudySummary.from_json(data), cached=False)

    def watch_tracking(self) -> None:
        """Say once when MLflow goes away and once when it is back (checked every 5 s).

        The tracker counts outages, so one that began and ended between two checks is still
        reported (both lines), not silently skipped."""
        if time.monotonic() - self.last_check < 5:
            return
        self.last_check = time.monotonic()
        status = ray.get(self.tracker.status.remote())
        messages, self.outages_seen, self.tracking_down = outage_news(
            status, self.outages_seen, self.tracking_down
        )
        for message in messages:
            log.warning(message)
            if self.notify is not None:
                self.notify(message)

    @property
    def busy(self) -> bool:
        return bool(self.queue or self.tuning is not None or self.finals)

    def snapshot(self) -> dict[str, Any]:
        return ray.get(self.board.snapshot.remote())


def outage_news(
    status: dict[str, Any], outages_seen: int, was_down: bool
) -> tuple[list[str], int, bool]:
    """What to tell the user about MLflow since the last check: (lines, outages, down).

    ``status`` is the tracker's (``down`` now, ``outages`` ever), so an outage that began
    and ended between two checks still gets both lines."""
    messages = []
    down = was_down
    if status["outages"] > outages_seen and not down:
        messages.append("MLflow is unreachable: buffering tracking writes (nothing is lost)")
        down = True
    if down and not status["down"]:
        messages.append("MLflow is reachable again: buffered writes flushed")
        down = False
    return messages, max(outages_seen, status["outages"]), down


def run_sweep(
    cfg: SweepConfig,
    on_tick: Callable[[dict[str, Any]], None] | None = None,
    resume: bool = False,
    notify: Callable[[str], None] | None = None,
) -> SweepResult:
    """Run every study and its final retrains; returns study summaries and final results."""
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    datasets = prepare_data(cfg)
    check_backbone(cfg)
    check_access(cfg.tracking_uri)
    init_ray(cfg)
    started = time.time()
    sweep = SweepRun(cfg, planned_studies(cfg, datasets), datasets, resume)
    sweep.notify = notify  # one-line warnings for the user (MLflow down / back)
    while sweep.busy:
        sweep.step()
        sweep.watch_tracking()
        if on_tick is not None:
            on_tick(sweep.snapshot())
    if on_tick is not None:
        on_tick(sweep.snapshot())
    ray.get(sweep.tracker.close.remote())  # every buffered write reached MLflow, or raise
    sweep.last_check = 0.0
    sweep.watch_tracking()  # an outage that ended during close is reported as over
    sweep.result.wall_s = time.time() - started
    sweep.result.started_at = started
    sweep.result.slots = slots(cfg, ray.cluster_resources())
    return sweep.result
