"""Plan → reconcile → one shared Ray Tune run (a TPE searcher and ASHA per study) → finals.

The driver's loop, shaped like Syne Tune's: it waits on three things at once (the tuning
task, the final retrains in flight, the study event queue) and handles one at a time. A
study reaches the driver exactly once, as a typed event (``StudyEnded`` / ``StudyFailed``)
from the searcher that decides its life (``tuner.sweep.multiplex``); its final retrains
are submitted at once and run when Ray has a slot for them (while trials wait for every
slot, that is at the tuning's tail: no slot is idle either way). When the tuning task
returns, a study it never announced is failed with the reason. Work per event is O(1) in
the sweep's size.

What a re-run reuses is decided once, before anything runs (``tuner.sweep.reconcile``).
Ctrl-C and SIGTERM take one clean path (``tuner.sweep.shutdown``).
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ray

from tuner.config import SweepConfig
from tuner.records import FinalResult, StudyEnded, StudyEvent, StudySummary, first_line
from tuner.sweep.cluster import alive_nodes, init_ray, on_driver_node, start_tracker
from tuner.sweep.events import actor_name, start_events
from tuner.sweep.final import final_hash, final_stage, log_final
from tuner.sweep.plan import (
    StudySpec,
    check_backbone,
    planned_studies,
    prepare_data,
)
from tuner.sweep.preflight import (
    PendingWatch,
    autoscaler_report,
    check_resources,
    cluster_autoscales,
)
from tuner.sweep.progress import ProgressBoard, running_trials
from tuner.sweep.ray_internals import interrupt_tuner, saved_state_readable
from tuner.sweep.reconcile import reconcile
from tuner.sweep.shared_run import TuningOutcome, run_shared
from tuner.sweep.shutdown import StopRequest, SweepInterrupted
from tuner.sweep.study import study_run_tags
from tuner.sweep.utilisation import slots
from tuner.tracking.buffered import TrackingError, outage_news
from tuner.tracking.client import check_access
from tuner.tracking.lease import SweepLease
from tuner.tracking.store import ensure_store

log = logging.getLogger("petl_sweep")

#: How long the driver waits for something to happen before it looks at signals and MLflow
TICK_S = 0.5


@dataclass
class SweepResult:
    """What a sweep did: every study's summary, every final run, what was reused."""

    studies: dict[str, StudySummary] = field(default_factory=dict)
    finals: list[FinalResult] = field(default_factory=list)
    reused_studies: int = 0
    reused_finals: int = 0
    #: Runs an earlier driver left RUNNING that this run ended as KILLED/lost
    stale_closed: int = 0
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


class SweepRun:
    """The driver's state of one sweep: what it is owed, what is in flight, the results."""

    def __init__(self, cfg: SweepConfig, studies: list[StudySpec], datasets: dict, resume: bool):
        self.cfg, self.datasets = cfg, datasets
        here = on_driver_node()
        self.tracker = start_tracker(cfg)
        self.tracking_down, self.last_check, self.outages_seen = False, 0.0, 0
        self.notify: Callable[[str], None] = lambda message: None
        self.board = (
            ray.remote(num_cpus=0)(ProgressBoard)
            .options(name=actor_name(cfg.name, "board"), scheduling_strategy=here)
            .remote([s.key for s in studies], cfg.tune.num_samples)
        )
        self.events = start_events(cfg.name, here)
        self.tune_task = ray.remote(num_cpus=0, max_retries=0)(run_shared).options(
            scheduling_strategy=here
        )
        self.final_stage = final_stage(cfg)
        self.result = SweepResult()
        plan = reconcile(cfg, studies, self.tracker, resume)
        self.finished_finals = plan.finished_finals
        #: trials that finished after Ray Tune's last save: replayed, not trained again
        self.replayed = len(plan.recorded)
        if plan.stale:
            self.result.stale_closed = ray.get(
                self.tracker.end_runs.remote(plan.stale, "KILLED", {"outcome": "lost"})
            )
        # before the tuning task starts: its calls to the tracker must find these runs
        ray.get([self.tracker.adopt.remote(key, *run) for key, run in plan.adopt.items()])
        #: the studies the tuning task owes an event, by key
        self.owed: dict[str, StudySpec] = {s.key: s for s in plan.queue}
        self.tuning: Any = None
        if plan.queue:
            self.tuning = self.tune_task.remote(
                cfg, plan.queue, resume, plan.adopted_trials, plan.recorded
            )
        self.next_events = self.events.next_events.remote(TICK_S)
        #: final runs in flight: task → (study, seed index, final hash); per study, how
        #: many are in flight and the test accuracies of those done (no scan per final)
        self.finals: dict[Any, tuple[StudySummary, int, str]] = {}
        self.finals_left: Counter[str] = Counter()
        self.final_accs: dict[str, list[float]] = {}
        for summary in plan.reuse.values():
            self.result.reused_studies += 1
            self.study_done(summary, cached=True)

    # -- one event at a time --------------------------------------------------------------
    def step(self) -> None:
        """Wait for the next thing to happen (an event, a final run, the tuning task's end)
        and handle it."""
        waiting = [self.next_events, *self.finals] + ([self.tuning] if self.tuning else [])
        ready, _ = ray.wait(waiting, num_returns=1, timeout=TICK_S)
        for ref in ready:
            if ref is self.next_events:
                for event in ray.get(ref):
                    self.handle(event)
                self.next_events = self.events.next_events.remote(TICK_S)
            elif ref is self.tuning:
                self.tuning_done(ref)
            else:
                self.final_done(ref)

    def handle(self, event: StudyEvent) -> None:
        study = self.owed.pop(event.study, None)
        if study is None:  # announced again by a restored run, or not this run's to tune
            return
        if isinstance(event, StudyEnded):
            self.study_done(event.summary, cached=False)
        else:
            self.study_failed(study, event.reason, event.detail)

    def tuning_done(self, ref: Any) -> None:
        """The tuning task returned: take its last events, fail what it never announced."""
        self.tuning = None
        try:
            outcome: TuningOutcome = ray.get(ref)
            reason = "the tuning run ended before this study finished"
        except Exception as err:  # the shared run itself failed: its open studies too
            outcome, reason = TuningOutcome(), f"the tuning run failed: {first_line(err)}"
        # The read already waiting on the queue may hold the last events (it took them as
        # they came, while this loop saw the task end first): handle it before draining.
        for event in [*ray.get(self.next_events), *ray.get(self.events.next_events.remote(0.0))]:
            self.handle(event)
        self.next_events = self.events.next_events.remote(TICK_S)
        if outcome.interrupted:
            return
        for study in list(self.owed.values()):
            self.owed.pop(study.key)
            self.study_failed(study, reason, reason)

    def study_done(self, summary: StudySummary, cached: bool) -> None:
        """Record a study and start its final retrains (those not already in MLflow)."""
        self.result.studies[summary.study] = summary
        if not summary.best:
            self.result.failed[summary.study] = summary.error or "no result"
            self.board.update.remote(summary.study, status="no result")
            return
        pending = False
        for i in range(self.cfg.final.seeds):
            key = final_hash(self.cfg, summary, i)
            if key in self.finished_finals:
                self.result.reused_finals += 1
                continue
            self.finals[self.final_stage.submit(summary, i)] = (summary, i, key)
            self.finals_left[summary.study] += 1
            pending = True
        status = ("cached" if cached else "final") if pending else "done"
        self.board.update.remote(summary.study, status=status, best=summary.best.val_acc)

    def study_failed(self, study: StudySpec, reason: str, detail: str) -> None:
        """A study that could not start (or whose run ended without it): FAILED in MLflow
        with its error, the other studies unaffected."""
        self.result.failed[study.key] = reason
        tags = study_run_tags(self.cfg, study)
        ray.get(self.tracker.fail_run.remote(study.key, study.key, tags, reason, detail))
        self.board.update.remote(study.key, status="failed")

    def final_done(self, ref: Any) -> None:
        summary, seed_index, key = self.finals.pop(ref)
        study_key = summary.study
        self.finals_left[study_key] -= 1
        try:
            result = self.final_stage.result(ray.get(ref), summary, seed_index)
        except Exception as err:  # a final retrain that raised: the others go on
            self.result.failed[study_key] = f"final retrain: {first_line(err)}"
            self.board.update.remote(study_key, status="failed")
            return
        result.final_hash = key
        log_final(self.cfg, self.tracker, result, self.datasets[result.spec.task])
        self.result.finals.append(result)
        self.finished_finals.add(key)
        seeds = self.final_accs.setdefault(study_key, [])
        seeds.append(result.test_acc)
        left = self.finals_left[study_key] > 0
        self.board.update.remote(
            study_key, final=sum(seeds) / len(seeds), status="final" if left else "done"
        )

    # -- stopping early -------------------------------------------------------------------
    def interrupt(self, stop: StopRequest) -> SweepInterrupted:
        """The clean stop: trials checkpoint (within ``tune.stop_grace_s``), Ray Tune saves
        its state, in-flight finals are cancelled, open runs end KILLED/interrupted."""
        assert stop.signum is not None
        self.notify(
            f"{stop.signal_name}: stopping; running trials checkpoint first "
            f"(up to {self.cfg.tune.stop_grace_s:.0f} s; press Ctrl-C again to skip)"
        )
        ray.get(self.events.request_stop.remote())
        counts = ray.get(self.board.snapshot.remote())["rows"]
        running = running_trials(counts)
        deadline = time.monotonic() + self.cfg.tune.stop_grace_s
        while (
            self.tuning is not None
            and not stop.forced
            and time.monotonic() < deadline
            and ray.get(self.events.parked.remote()) < running
        ):
            time.sleep(0.2)
        if self.tuning is not None:
            pid = ray.get(self.events.tuner_pid.remote())
            if not pid or not interrupt_tuner(pid):
                ray.cancel(self.tuning, force=True)
            ready, _ = ray.wait([self.tuning], timeout=0 if stop.forced else 60)
            if not ready:
                ray.cancel(self.tuning, force=True)
        for ref in self.finals:
            ray.cancel(ref, force=True)
        closed = ray.get(self.tracker.end_open.remote("KILLED", {"outcome": "interrupted"}))
        rows = ray.get(self.board.snapshot.remote())["rows"]
        return SweepInterrupted(
            signum=stop.signum,
            trials_kept=sum(r["done"] for r in rows.values()),
            trials_interrupted=running_trials(rows),
            runs_closed=closed,
            finals_cancelled=len(self.finals),
        )

    # -- MLflow's health, for the user ----------------------------------------------------
    def watch_tracking(self) -> None:
        """Say once when MLflow goes away and once when it is back (checked every 5 s).

        The tracker counts outages, so one that began and ended between two checks is still
        reported (both lines), not silently skipped."""
        if time.monotonic() - self.last_check < 5:
            return
        self.last_check = time.monotonic()
        status = ray.get(self.tracker.status.remote())
        if status.get("fatal"):
            raise TrackingError(status["fatal"])
        messages, self.outages_seen, self.tracking_down = outage_news(
            status, self.outages_seen, self.tracking_down
        )
        for message in messages:
            log.warning(message)
            self.notify(message)

    @property
    def busy(self) -> bool:
        return bool(self.tuning is not None or self.finals)

    def snapshot(self) -> dict[str, Any]:
        return ray.get(self.board.snapshot.remote())


def run_sweep(
    cfg: SweepConfig,
    on_tick: Callable[[dict[str, Any]], None] | None = None,
    resume: bool = False,
    notify: Callable[[str], None] | None = None,
) -> SweepResult:
    """Run every study and its final retrains; returns study summaries and final results.

    Raises ``SweepInterrupted`` after a clean stop on SIGINT/SIGTERM."""
    Path(cfg.out_dir).mkdir(parents=True, exist_ok=True)
    if cfg.replay:  # labels, not data: nothing to decode, no backbone to load
        from tuner.replay.engine import replay_datasets

        datasets = replay_datasets(cfg)
    else:
        datasets = prepare_data(cfg)
        check_backbone(cfg)
    ensure_store(cfg.tracking_uri)  # a new SQLite store is created once, under a lock
    check_access(cfg.tracking_uri)
    notify = notify or (lambda message: None)
    stop = StopRequest()
    lease = SweepLease(
        cfg.tracking_uri,
        cfg.experiment,
        artifact_root=cfg.artifact_root,
        on_lost=lambda reason: (notify(f"stopping: {reason}"), stop.ask()),
    )
    with lease:  # one running copy of a sweep per store: a second start fails here
        if lease.takeover:
            notify(lease.takeover)
        local = init_ray(cfg)
        stop.install()  # after ray.init: ours replace Ray's native handlers
        try:
            waiting = check_resources(cfg, alive_nodes(), cluster_autoscales(cfg))
            if waiting:  # an autoscaling cluster may yet add a node that fits
                notify(waiting)
            return _drive(cfg, datasets, resume, on_tick, notify, stop)
        except BaseException:
            if local:  # a sweep that fails or is stopped leaves no Ray of its own behind
                ray.shutdown()
            raise
        finally:
            stop.restore()


def _drive(
    cfg: SweepConfig,
    datasets: dict,
    resume: bool,
    on_tick: Callable[[dict[str, Any]], None] | None,
    notify: Callable[[str], None],
    stop: StopRequest,
) -> SweepResult:
    started = time.time()
    experiment = cfg.experiment_path
    if resume and Path(experiment).exists() and not saved_state_readable(experiment):
        notify(
            f"Ray Tune's saved state in {experiment} is cut short (a full disk?): the "
            "interrupted studies start again, and their leftover runs are closed as lost"
        )
        shutil.rmtree(experiment, ignore_errors=True)
        resume = False
    sweep = SweepRun(cfg, planned_studies(cfg, datasets), datasets, resume)
    sweep.notify = notify
    if sweep.result.stale_closed:
        notify(
            f"closed {sweep.result.stale_closed} run(s) an earlier run of {cfg.name} left "
            "RUNNING as KILLED/lost (use --resume to continue them instead)"
        )
    if sweep.replayed:
        notify(
            f"replaying {sweep.replayed} trial(s) that finished after Ray Tune's last save "
            "from their MLflow runs (not trained again)"
        )
    # Only a cluster that can add nodes waits on purpose: on a fixed one check_resources
    # has shown a trial fits, and a slow start is not a request nothing can hold.
    pending = PendingWatch(cfg) if cluster_autoscales(cfg) else None
    while sweep.busy:
        if stop.requested:
            interrupted = sweep.interrupt(stop)
            ray.get(sweep.tracker.close.remote())
            raise interrupted
        sweep.step()
        sweep.watch_tracking()
        snapshot = sweep.snapshot()
        running = running_trials(snapshot["rows"]) + len(sweep.finals)
        if pending is not None and not running and sweep.tuning is not None:
            said = pending.tick(1, 0, alive_nodes(), autoscaler_report())  # stuck?
            if said:
                notify(said)
        elif pending is not None:
            pending.tick(0, running, [])
        if on_tick is not None:
            on_tick(snapshot)
    if on_tick is not None:
        on_tick(sweep.snapshot())
    ray.get(sweep.tracker.close.remote())  # every buffered write reached MLflow, or raise
    sweep.last_check = 0.0
    sweep.watch_tracking()  # an outage that ended during close is reported as over
    sweep.result.wall_s = time.time() - started
    sweep.result.started_at = started
    sweep.result.slots = slots(cfg, ray.cluster_resources())
    return sweep.result
