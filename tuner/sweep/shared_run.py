"""The sweep's one Ray Tune run: every study's trials in one ``Tuner``, on one actor pool.

``run_shared`` is the body of one Ray task on the driver's node. It builds the ``Tuner``
(``tuner.sweep.multiplex``'s searcher and scheduler, the sweep's trainable, the MLflow
callback), runs it, and returns the summaries of studies whose end the callback did not
already post (after a ``--resume``, studies whose trials all ended before the crash). Studies
finished during the run reach the driver through the progress board as they end, so their
final retrains start while later studies tune.
"""

from __future__ import annotations

import functools
import math
import traceback
from typing import Any

import ray
from ray import tune
from ray.tune.schedulers import ASHAScheduler, FIFOScheduler

from tuner.config import SweepConfig
from tuner.records import METRIC, PARENT_RUN_TAG, first_line
from tuner.sweep.callbacks import MLflowTrialCallback, actor_name, finish_study
from tuner.sweep.checkpoints import CheckpointPolicy
from tuner.sweep.multiplex import (
    MultiStudyScheduler,
    MultiStudySearcher,
    Opened,
    split_config,
)
from tuner.sweep.plan import StudySpec
from tuner.sweep.specs import trial_spec
from tuner.sweep.study import open_study, study_total
from tuner.sweep.trainable import sweep_trainable
from tuner.sweep.utilisation import slots


class StudyOpener:
    """Opens the sweep's studies by key for the searcher; picklable (Ray Tune saves the
    searcher with the experiment), so it finds the tracker and board by name."""

    def __init__(self, cfg: SweepConfig, studies: dict[str, StudySpec]) -> None:
        self.cfg, self.studies = cfg, studies

    def _actor(self, role: str) -> Any:
        return ray.get_actor(actor_name(self.cfg.name, role))

    def __call__(self, key: str) -> Opened:
        study = self.studies[key]
        return open_study(self.cfg, study, self._actor("tracker"), self._actor("board"))

    def failed(self, key: str, error: BaseException) -> None:
        detail = "".join(traceback.format_exception(error))
        self._actor("board").post.remote("failed", (key, first_line(error), detail))


def open_limits(cfg: SweepConfig, cluster: dict[str, float]) -> tuple[int, int]:
    """(trials in flight per study, studies open at once): enough open studies to fill every
    slot, plus one so the next study's trials are queued while one drains."""
    per_study = cfg.tune.max_concurrent_trials
    if cfg.resources.max_concurrent_studies:
        return per_study, cfg.resources.max_concurrent_studies
    return per_study, math.ceil(slots(cfg, cluster) / per_study) + 1


def _scheduler(cfg: SweepConfig) -> MultiStudyScheduler:
    if not cfg.tune.early_stopping:
        return MultiStudyScheduler(FIFOScheduler)
    asha = functools.partial(
        ASHAScheduler,
        time_attr="training_iteration",
        metric=METRIC,
        mode="max",
        max_t=cfg.tune.max_epochs,
        grace_period=cfg.tune.grace_period,
        reduction_factor=cfg.tune.reduction_factor,
    )
    return MultiStudyScheduler(asha)


def new_tuner(cfg: SweepConfig, studies: dict[str, StudySpec], trainable: Any) -> tune.Tuner:
    per_study, max_open = open_limits(cfg, ray.cluster_resources())
    opener = StudyOpener(cfg, studies)
    totals = {key: study_total(cfg, study) for key, study in studies.items()}
    searcher = MultiStudySearcher(cfg.name, totals, opener, opener.failed, per_study, max_open)
    return tune.Tuner(
        trainable,
        param_space={},
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=_scheduler(cfg),
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


def reattach(cfg: SweepConfig, studies: dict[str, StudySpec], tracker: Any) -> None:
    """After a crash: point the tracker at each study's RUNNING run (the restored searcher
    does not open a study twice) and mark it resumed."""
    running = ray.get(tracker.find.remote({"sweep": cfg.name, "stage": "tune"}, "RUNNING"))
    keys = {r["tags"].get("study") for r in running if PARENT_RUN_TAG not in r["tags"]}
    for key in keys & set(studies):
        ray.get(tracker.start_run.remote(key, key, {}))  # resume mode: finds, not creates
        ray.get(tracker.set_tags.remote(key, {"resumed": "true"}))


def run_shared(cfg: SweepConfig, queue: list[StudySpec], resume: bool = False) -> list[dict]:
    """Tune every study in ``queue`` in one Ray Tune run; returns the summaries (JSON) of
    studies not already posted to the board.

    ``resume``: continue the sweep's interrupted Ray Tune run (``Tuner.restore``) when its
    state is in ``storage_path``: finished trials stay finished, unfinished and errored ones
    continue from their last checkpoints, every study's searcher and ASHA come back."""
    studies = {s.key: s for s in queue}
    tracker = ray.get_actor(actor_name(cfg.name, "tracker"))
    board = ray.get_actor(actor_name(cfg.name, "board"))
    specs = {k: trial_spec(cfg, s.task, s.method, dict(s.fixed), "tune", cfg.seed)
             for k, s in studies.items()}  # fmt: skip
    policy = CheckpointPolicy(cfg.tune.checkpoint_every, cfg.tune.checkpoint_interval_s)
    trainable = tune.with_resources(
        sweep_trainable(specs, policy, f"trial_{cfg.name}"),
        {"cpu": cfg.resources.cpus_per_trial, "gpu": cfg.resources.gpus_per_trial},
    )
    experiment = f"{cfg.storage_path.rstrip('/')}/{cfg.name}"
    if resume and tune.Tuner.can_restore(experiment):
        reattach(cfg, studies, tracker)
        tuner = tune.Tuner.restore(
            experiment, trainable, resume_unfinished=True, resume_errored=True
        )
    else:
        tuner = new_tuner(cfg, studies, trainable)
    results = tuner.fit()
    rows: dict[str, list] = {key: [] for key in studies}
    for res in results:
        key, _, _ = split_config(res.config or {})
        trial_id = (res.metrics or {}).get("trial_id", "")
        if key in rows:
            error = str(res.error) if res.error else ""
            rows[key].append((trial_id, res.config or {}, res.metrics or {}, error))
    if resume:
        for key, trials in rows.items():
            ray.get(tracker.end_lost_trials.remote(key, {t[0] for t in trials}))
    posted = set(ray.get(board.posted.remote()))  # after every earlier post, in order
    return [
        finish_study(cfg, studies[key], tracker, trials).to_json()
        for key, trials in rows.items()
        if key not in posted
    ]
