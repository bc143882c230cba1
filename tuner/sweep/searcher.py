"""The Optuna searcher of a study, honest about ASHA's early stops.

Ray hands a trial that ASHA stopped to Optuna as *complete* with its truncated score, so TPE
would learn from short runs as if they were final. ``HonestOptunaSearch`` tells Optuna such
trials were *pruned* (their intermediate values are already reported).
"""

from __future__ import annotations

from typing import Any

import optuna
from ray.tune.search.optuna import OptunaSearch

from tuner.records import METRIC, trial_outcome


class HonestOptunaSearch(OptunaSearch):
    """OptunaSearch that reports ASHA-stopped trials to Optuna as PRUNED, not COMPLETE."""

    def __init__(self, *args: Any, max_epochs: int, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.max_epochs = max_epochs
        self.told: dict[str, str] = {}

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        outcome = trial_outcome(result, self.max_epochs)
        if not error and outcome == "stopped_early" and trial_id not in self._completed_trials:
            self._ot_study.tell(self._ot_trials[trial_id], state=optuna.trial.TrialState.PRUNED)
            self._completed_trials.add(trial_id)
            self.told[trial_id] = "PRUNED"
            return
        super().on_trial_complete(trial_id, result, error)
        state = self._ot_study.trials[-1].state if self._ot_study.trials else None
        self.told[trial_id] = state.name if state is not None else "UNKNOWN"

    def trial_states(self) -> dict[str, int]:
        """How Optuna recorded every trial: counts by state name."""
        counts: dict[str, int] = {}
        for t in self._ot_study.trials:
            counts[t.state.name] = counts.get(t.state.name, 0) + 1
        return counts


def tpe_searcher(
    seed: int, max_epochs: int, first: list[dict[str, Any]] | None = None
) -> HonestOptunaSearch:
    """A seeded TPE searcher maximising ``val/acc``; ``first`` are configurations Optuna
    evaluates before sampling (warm start: ``enqueue_trial``)."""
    return HonestOptunaSearch(
        metric=METRIC,
        mode="max",
        sampler=optuna.samplers.TPESampler(seed=seed),
        max_epochs=max_epochs,
        points_to_evaluate=first or None,
    )
