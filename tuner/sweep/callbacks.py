"""What Ray Tune calls back into during a sweep: the logger of trial runs, and nothing else.

Shaped like Ray's ``MLflowLoggerCallback``: a child MLflow run per trial under its study's
run, one ``log_batch`` per epoch, ended with its outcome (and error, if it failed). It
decides nothing: when a study is over is the searcher's call (``tuner.sweep.multiplex``).
It also keeps the progress board's counts, which are for display only. A trial that replays
a recorded one after a crash (``tuner.sweep.recorded``) is counted but never logged: its
MLflow run stays as it finished.

One trap lives here: ``Tuner.restore`` unpickles the callbacks of the interrupted run.
Actor handles inside them would point into a Ray session that no longer exists, so the
callback holds the *names* of the sweep's tracker and board and looks them up lazily.
"""

from __future__ import annotations

from typing import Any

import ray
from ray import tune

from tuner.config import SweepConfig
from tuner.records import METRIC, first_line, logged_metrics, time_totals, trial_outcome
from tuner.sweep.events import actor_name
from tuner.sweep.multiplex import WARM, split_config, study_of
from tuner.sweep.plan import StudySpec
from tuner.sweep.recorded import FLAG, is_replay, published
from tuner.sweep.scheduler import trial_error
from tuner.sweep.study import study_tags
from tuner.sweep.warm_start import WARM_TAG


def trial_key(study: str, trial_id: str) -> str:
    """Our key of a trial's MLflow run (its ``petl.key`` tag): ``task:method/trial_id``."""
    return f"{study}/{trial_id}"


class MLflowTrialCallback(tune.Callback):
    """Child MLflow run per trial under its study's parent run, one ``log_batch`` per epoch."""

    def __init__(self, cfg: SweepConfig, studies: dict[str, StudySpec]) -> None:
        self.sweep, self.max_epochs = cfg.name, cfg.tune.max_epochs
        self.devices_per_trial = cfg.devices_per_trial
        self.tags = {key: study_tags(cfg, study) for key, study in studies.items()}
        self.fixed = {key: dict(study.fixed) for key, study in studies.items()}
        self.started: set[str] = set()
        #: live trial id → the sums of its epochs' times, logged at its end (EPOCH_TIMES)
        self.times: dict[str, dict[str, float]] = {}
        self._actors: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Restored into a new session: no stale handles, and resumed trials count again.
        return {**self.__dict__, "_actors": {}, "started": set()}

    def _actor(self, role: str) -> Any:
        if role not in self._actors:
            self._actors[role] = ray.get_actor(actor_name(self.sweep, role))
        return self._actors[role]

    @property
    def tracker(self) -> Any:
        return self._actor("tracker")

    @property
    def board(self) -> Any:
        return self._actor("board")

    @staticmethod
    def _key(trial: Any) -> str:
        return trial_key(study_of(trial.config), trial.trial_id)

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id in self.started:
            return
        self.started.add(trial.trial_id)
        study, meta, hp = split_config(trial.config)
        if is_replay(trial, published(self.sweep)):  # its run exists, finished
            self.board.trial_started.remote(study)
            return
        tags = {**self.tags[study], "trial_id": trial.trial_id}
        if meta.get(WARM):
            tags[WARM_TAG] = meta[WARM]
        # a trial resumed after a crash continues the run the sweep adopted for it
        self.tracker.ensure_run.remote(
            self._key(trial),
            f"trial_{trial.trial_id}",
            tags,
            params={**self.fixed[study], **hp},
            parent=study,
        )
        self.board.trial_started.remote(study)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        if result.get(FLAG):
            return
        metrics = logged_metrics(result)
        sums = self.times.setdefault(trial.trial_id, {})
        for name, total in time_totals([result]).items():
            sums[name] = sums.get(name, 0.0) + total
        self.tracker.log_metrics.remote(
            self._key(trial), metrics, int(result["training_iteration"])
        )

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        outcome = trial_outcome(trial.last_result, self.max_epochs)
        if trial.last_result.get(FLAG):
            self.board.trial_done.remote(study_of(trial.config), outcome, trial.last_result[METRIC])
            return
        hours = trial.last_result.get("time_total_s", 0.0) * self.devices_per_trial / 3600
        totals = self.times.pop(trial.trial_id, {})
        self.tracker.log_metrics.remote(self._key(trial), {"device_hours": hours, **totals}, 0)
        self.tracker.end_run.remote(
            self._key(trial),
            "FAILED" if outcome == "diverged" else "FINISHED",
            {
                "outcome": outcome,
                "epochs_run": trial.last_result.get("training_iteration", 0),
                "node": trial.last_result.get("node_id", ""),
            },
        )
        val_acc = trial.last_result.get(METRIC)
        self.board.trial_done.remote(study_of(trial.config), outcome, val_acc)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        error = first_line(trial_error(trial)) or "trial failed"
        if is_replay(trial, published(self.sweep)):
            self.board.trial_done.remote(study_of(trial.config), "error")
            return
        totals = self.times.pop(trial.trial_id, {})
        if totals:
            self.tracker.log_metrics.remote(self._key(trial), totals, 0)
        self.tracker.end_run.remote(
            self._key(trial), "FAILED", {"outcome": "error", "error": error[:500]}
        )
        self.board.trial_done.remote(study_of(trial.config), "error")
