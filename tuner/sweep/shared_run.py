"""The sweep's one Ray Tune run: every study's trials in one ``Tuner``, on one actor pool.

``run_shared`` is the body of one Ray task on the driver's node. It builds the ``Tuner``
(``tuner.sweep.multiplex``'s searcher and scheduler, the sweep's trainable, the MLflow
logger), runs it, and returns a ``TuningOutcome``. Studies reach the driver only as events
(``tuner.sweep.events``), each exactly once, as they end; their final retrains are submitted
then, while later studies tune. ``StudyLife`` is what the searcher calls to open, close and
announce a study: the MLflow side of a study's life, in one picklable object.
"""

from __future__ import annotations

import functools
import math
import os
from dataclasses import dataclass
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from tuner.config import SweepConfig
from tuner.records import METRIC, StudySummary
from tuner.sweep.callbacks import MLflowTrialCallback
from tuner.sweep.checkpoints import CheckpointPolicy
from tuner.sweep.events import EventSink, actor_name
from tuner.sweep.multiplex import Closing, MultiStudySearcher, Opened
from tuner.sweep.plan import StudySpec
from tuner.sweep.recorded import RecordedTrial, owed, publish, published
from tuner.sweep.scheduler import MultiStudyScheduler
from tuner.sweep.specs import trial_spec
from tuner.sweep.study import close_study, open_study, study_run_tags, study_total
from tuner.sweep.trainable import sweep_trainable
from tuner.sweep.utilisation import slots


class StudyLife:
    """The searcher's ``StudyHooks``: opens, closes and announces the sweep's studies.
    Picklable (Ray Tune saves the searcher with the experiment), so it finds the tracker,
    board and event queue by name."""

    def __init__(self, cfg: SweepConfig, studies: dict[str, StudySpec]) -> None:
        self.cfg, self.studies = cfg, studies
        self.emit = EventSink(cfg.name)

    def _actor(self, role: str) -> Any:
        return ray.get_actor(actor_name(self.cfg.name, role))

    def open(self, key: str) -> Opened:
        return open_study(self.cfg, self.studies[key], self._actor("tracker"), self._actor("board"))

    def close(self, closing: Closing) -> StudySummary:
        return close_study(self.cfg, self.studies[closing.key], self._actor("tracker"), closing)

    def reopen(self, key: str) -> None:
        """After ``Tuner.restore``: the study's run continues, created anew if the store never
        recorded it (the crash came before its first write reached MLflow)."""
        tracker = self._actor("tracker")
        study = self.studies[key]
        ray.get(tracker.ensure_run.remote(key, key, study_run_tags(self.cfg, study)))
        ray.get(tracker.set_tags.remote(key, {"resumed": "true"}))

    def recorded(self) -> dict[str, RecordedTrial]:
        return published(self.cfg.name)

    def owed(self) -> set[str]:
        return owed(self.cfg.name) or set(self.studies)


@dataclass(frozen=True)
class TuningOutcome:
    """How the tuning run ended: ``interrupted`` when the driver asked it to stop; ``lost``
    the trial runs (adopted after a crash) that the restored experiment no longer knew."""

    interrupted: bool = False
    lost: int = 0


def open_limits(cfg: SweepConfig, cluster: dict[str, float]) -> tuple[int, int]:
    """(trials in flight per study, studies open at once): enough open studies that twice
    the slots' worth of trials can be in flight, plus two that are draining.

    Why twice: Ray Tune hands an ending trial's actor to a trial already waiting for a slot;
    with none waiting it stops the actor, and the next trial pays for a new worker process
    (seconds of CPU). With one study's worth of trials beyond the slots, every study's
    draining tail left none waiting: on study 000's plan in replay, 100 actors for 1,032
    trials and a time per trial that grew 4x, against 11 actors and a flat time with the
    waiting trials (bench/RESULTS.md). Each study's own limit (``per_study``) is unchanged."""
    per_study = cfg.tune.max_concurrent_trials
    if cfg.resources.max_concurrent_studies:
        return per_study, cfg.resources.max_concurrent_studies
    return per_study, math.ceil(2 * slots(cfg, cluster) / per_study) + 2


def study_scheduler(cfg: SweepConfig) -> Any:
    """What builds one study's scheduler: ASHA as the sweep configures it (it reads only
    ``cfg.tune``), or FIFO without early stopping. The replay comparison builds its
    schedulers with it too."""
    if not cfg.tune.early_stopping:
        return FIFOScheduler
    return functools.partial(
        ASHAScheduler,
        time_attr="training_iteration",
        metric=METRIC,
        mode="max",
        max_t=cfg.tune.max_epochs,
        grace_period=cfg.tune.grace_period,
        reduction_factor=cfg.tune.reduction_factor,
    )


def new_tuner(cfg: SweepConfig, studies: dict[str, StudySpec], trainable: Any) -> tune.Tuner:
    per_study, max_open = open_limits(cfg, ray.cluster_resources())
    totals = {key: study_total(cfg, study) for key, study in studies.items()}
    fixed = {key: dict(study.fixed) for key, study in studies.items()}
    searcher = MultiStudySearcher(
        totals, StudyLife(cfg, studies), per_study, max_open, cfg.tune.max_epochs, fixed
    )
    return tune.Tuner(
        trainable,
        param_space={},
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=MultiStudyScheduler(study_scheduler(cfg), searcher),
            num_samples=-1,  # the searcher says when every study has had its trials
            max_concurrent_trials=per_study * max_open,
            reuse_actors=True,  # one actor runs trial after trial, across studies
        ),
        run_config=tune.RunConfig(
            name=cfg.name,
            storage_path=cfg.storage_path,
            callbacks=[MLflowTrialCallback(cfg, studies)],
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            # a trial on a lost node restarts from its last checkpoint on a surviving one
            failure_config=tune.FailureConfig(max_failures=3),
            verbose=0,
        ),
    )


def run_shared(
    cfg: SweepConfig,
    queue: list[StudySpec],
    restore: bool = False,
    adopted_trials: dict[str, str] | None = None,
    recorded: dict[str, RecordedTrial] | None = None,
) -> TuningOutcome:
    """Tune every study in ``queue`` in one Ray Tune run.

    ``restore``: continue the sweep's interrupted Ray Tune run (``Tuner.restore``) when its
    state is in ``storage_path``: finished trials stay finished, unfinished and errored ones
    continue from their last checkpoints, every study's searcher and ASHA come back.
    ``adopted_trials``: trial id → run key of the RUNNING trial runs the driver adopted; those
    the restored experiment never heard of are ended as KILLED/lost. ``recorded``: trial id →
    the trials whose runs finished after Ray Tune's last save; on a restore they are replayed
    from MLflow, never trained again (``tuner.sweep.recorded``)."""
    # Ray Tune saves trial statuses and the searcher at most this often ("auto": adaptive);
    # what a crash loses since the last save is replayed, not rerun (``recorded``).
    os.environ["TUNE_GLOBAL_CHECKPOINT_S"] = str(cfg.tune.state_save_s)
    # Ray Tune's own JSON, CSV and TensorBoard files per trial duplicate what MLflow holds;
    # flushing them on every result was a quarter of the Tune controller's time at scale
    # (bench/RESULTS.md, study 000's plan through the engine)
    os.environ.setdefault("TUNE_DISABLE_AUTO_CALLBACK_LOGGERS", "1")
    experiment = cfg.experiment_path
    restoring = restore and tune.Tuner.can_restore(experiment)
    replays = dict(recorded or {}) if restoring else {}
    # the restored searcher and logger read these by the sweep's name
    publish(cfg.name, replays, {s.key for s in queue})
    events = ray.get_actor(actor_name(cfg.name, "events"))
    ray.get(events.set_tuner_pid.remote(os.getpid()))  # where the driver sends its stop
    studies = {s.key: s for s in queue}
    specs = {k: trial_spec(cfg, s.task, s.method, dict(s.fixed), "tune", cfg.seed)
             for k, s in studies.items()}  # fmt: skip
    policy = CheckpointPolicy(cfg.tune.checkpoint_every, cfg.tune.checkpoint_interval_s)
    if cfg.replay:  # recorded results stand in for training (tuner.replay.engine)
        from tuner.replay.engine import replay_trainable

        function = replay_trainable(cfg, studies, policy, f"trial_{cfg.name}", replays)
    else:
        function = sweep_trainable(specs, policy, f"trial_{cfg.name}", cfg.name, replays)
    trainable = tune.with_resources(
        function,
        {"cpu": cfg.resources.cpus_per_trial, "gpu": cfg.resources.gpus_per_trial},
    )
    if restoring:
        tuner = tune.Tuner.restore(
            experiment, trainable, resume_unfinished=True, resume_errored=True
        )
    else:
        tuner = new_tuner(cfg, studies, trainable)
    results = tuner.fit()
    interrupted = bool(ray.get(events.stopping.remote()))
    lost = 0
    if adopted_trials and not interrupted:
        known = {(r.metrics or {}).get("trial_id") for r in results}
        tracker = ray.get_actor(actor_name(cfg.name, "tracker"))
        for trial_id, key in adopted_trials.items():
            if trial_id not in known:
                ray.get(tracker.end_run.remote(key, "KILLED", {"outcome": "lost"}))
                lost += 1
    return TuningOutcome(interrupted=interrupted, lost=lost)
