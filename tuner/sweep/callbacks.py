"""What Ray Tune calls back into during a study: the logger of trial runs.

A child run per trial goes to the sweep's tracker actor, one batch per epoch. One trap lives
here: ``Tuner.restore`` unpickles the callbacks of the interrupted run. Actor handles inside
them would point into a Ray session that no longer exists, so ``MLflowTrialCallback`` holds
the *names* of the sweep's tracker and progress actors and looks them up lazily: a restored
study logs to the new session's actors.
"""

from __future__ import annotations

from typing import Any

import ray
from ray import tune

from tuner.records import METRIC, logged_metrics, trial_outcome
from tuner.sweep.warm_start import WARM_TAG


def actor_name(sweep: str, role: str) -> str:
    """The name of a sweep's tracker/progress actor (one sweep of a name runs at a time)."""
    return f"petl-sweep:{sweep}:{role}"


class MLflowTrialCallback(tune.Callback):
    """Child MLflow run per trial under the study's parent run, one ``log_batch`` per epoch."""

    def __init__(
        self,
        sweep: str,
        study_key: str,
        fixed: dict[str, Any],
        tags: dict[str, str],
        max_epochs: int,
        devices: float,
        warm: list[tuple[dict[str, Any], str]] | None = None,
    ) -> None:
        self.sweep, self.study_key, self.fixed, self.tags = sweep, study_key, fixed, tags
        self.max_epochs, self.devices = max_epochs, devices
        #: warm-start points (configuration, source task): their trials are tagged so
        self.warm = warm or []
        self.started: set[str] = set()
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

    def _key(self, trial: Any) -> str:
        return f"{self.study_key}/{trial.trial_id}"

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        if trial.trial_id in self.started:
            return
        self.started.add(trial.trial_id)
        params = {**self.fixed, **trial.config}
        tags = {**self.tags, "trial_id": trial.trial_id}
        for point, source in self.warm:
            if all(trial.config.get(k) == v for k, v in point.items()):
                tags[WARM_TAG] = source
                break
        self.tracker.start_run.remote(
            self._key(trial),
            f"trial_{trial.trial_id}",
            tags,
            params=params,
            parent=self.study_key,
        )
        self.board.trial_started.remote(self.study_key)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        metrics = logged_metrics(result)
        self.tracker.log_metrics.remote(
            self._key(trial), metrics, int(result["training_iteration"])
        )
        if METRIC in result and not result.get("diverged"):
            self.board.trial_result.remote(self.study_key, float(result[METRIC]))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        outcome = trial_outcome(trial.last_result, self.max_epochs)
        hours = trial.last_result.get("time_total_s", 0.0) * self.devices / 3600
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
        self.board.trial_done.remote(self.study_key, outcome)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.tracker.end_run.remote(self._key(trial), "FAILED", {"outcome": "error"})
        self.board.trial_done.remote(self.study_key, "error")
