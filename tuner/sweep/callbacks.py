"""What Ray Tune calls back into during a sweep: the logger of trial runs and study ends.

A child run per trial goes to the sweep's tracker actor, one batch per epoch, under its
study's run; when a study's last trial ends its run is closed and its summary posted to the
progress board, where the driver picks it up to start its final retrains. One trap lives
here: ``Tuner.restore`` unpickles the callbacks of the interrupted run. Actor handles inside
them would point into a Ray session that no longer exists, so ``MLflowTrialCallback`` holds
the *names* of the sweep's tracker and progress actors and looks them up lazily: a restored
study logs to the new session's actors.
"""

from __future__ import annotations

import time
from typing import Any

import ray
from ray import tune
from ray.tune.experiment import Trial

from tuner.config import SweepConfig
from tuner.records import METRIC, StudySummary, logged_metrics, trial_outcome
from tuner.sweep.multiplex import LIVE, WARM, split_config, study_of
from tuner.sweep.plan import StudySpec
from tuner.sweep.study import close_study, study_tags, study_total, trial_records
from tuner.sweep.warm_start import WARM_TAG


def actor_name(sweep: str, role: str) -> str:
    """The name of a sweep's tracker/progress actor (one sweep of a name runs at a time)."""
    return f"petl-sweep:{sweep}:{role}"


class MLflowTrialCallback(tune.Callback):
    """Child MLflow run per trial under its study's parent run, one ``log_batch`` per epoch;
    a study's run is closed (its summary posted to the board) when its last trial ends."""

    def __init__(self, cfg: SweepConfig, studies: dict[str, StudySpec]) -> None:
        self.cfg, self.studies = cfg, studies
        self.sweep, self.max_epochs = cfg.name, cfg.tune.max_epochs
        self.tags = {key: study_tags(cfg, study) for key, study in studies.items()}
        self.totals = {key: study_total(cfg, study) for key, study in studies.items()}
        self.started: set[str] = set()
        self.closed: set[str] = set()
        self._actors: dict[str, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Restored into a new session: no stale handles, and restarted trials start again.
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
        return f"{study_of(trial.config)}/{trial.trial_id}"

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id in self.started:
            return
        self.started.add(trial.trial_id)
        study, meta, hp = split_config(trial.config)
        tags = {**self.tags[study], "trial_id": trial.trial_id}
        if meta.get(WARM):
            tags[WARM_TAG] = meta[WARM]
        self.tracker.start_run.remote(
            self._key(trial),
            f"trial_{trial.trial_id}",
            tags,
            params={**self.studies[study].fixed, **hp},
            parent=study,
        )
        self.board.trial_started.remote(study)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        metrics = logged_metrics(result)
        self.tracker.log_metrics.remote(
            self._key(trial), metrics, int(result["training_iteration"])
        )
        if METRIC in result and not result.get("diverged"):
            self.board.trial_result.remote(study_of(trial.config), float(result[METRIC]))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        outcome = trial_outcome(trial.last_result, self.max_epochs)
        hours = trial.last_result.get("time_total_s", 0.0) * self.cfg.devices_per_trial / 3600
        self.tracker.log_metrics.remote(self._key(trial), {"device_hours": hours}, 0)
        self.tracker.end_run.remote(
            self._key(trial),
            "FAILED" if outcome == "diverged" else "FINISHED",
            {
                "outcome": outcome,
                "epochs_run": trial.last_result.get("training_iteration", 0),
                "node": trial.last_result.get("node_id", ""),
            },
        )
        self.board.trial_done.remote(study_of(trial.config), outcome)
        self._close_if_done(trials, trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.tracker.end_run.remote(self._key(trial), "FAILED", {"outcome": "error"})
        self.board.trial_done.remote(study_of(trial.config), "error")
        self._close_if_done(trials, trial)

    def _close_if_done(self, trials: list, ended: Any) -> None:
        """Close the ended trial's study if every one of its trials has ended."""
        study = study_of(ended.config)
        mine = [t for t in trials if study_of(t.config) == study]
        over = all(t is ended or t.status in (Trial.TERMINATED, Trial.ERROR) for t in mine)
        if study in self.closed or len(mine) < self.totals[study] or not over:
            return
        self.closed.add(study)
        rows = [(t.trial_id, t.config, t.last_result, trial_error(t)) for t in mine]
        summary = finish_study(self.cfg, self.studies[study], self.tracker, rows)
        self.board.post.remote("done", summary.to_json())


def trial_error(trial: Any) -> str:
    """A failed trial's error text (empty when it did not fail)."""
    if trial.status != Trial.ERROR and not trial.error_file:
        return ""
    error = trial.get_error()
    return str(error) if error is not None else "trial failed"


def finish_study(cfg: SweepConfig, study: StudySpec, tracker: Any, rows: list) -> StudySummary:
    """Close a study from its trials' rows, with the searcher's Optuna counts and times."""
    searcher = LIVE.get(cfg.name)
    state = searcher.studies.get(study.key) if searcher else None
    now = time.time()
    opened_at = state.opened_at if state and state.opened_at else now
    return close_study(
        cfg,
        study,
        tracker,
        trial_records(rows, cfg.tune.max_epochs, study.fixed),
        (state.setup_s if state else 0.0, now - opened_at),
        searcher.trial_states(study.key) if searcher else {},
        state.opened.prepared_uri if state and state.opened else None,
    )
