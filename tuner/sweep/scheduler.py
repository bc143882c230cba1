"""The shared run's scheduler: one scheduler per study inside the sweep's one Ray Tune run.

``MultiStudyScheduler`` routes each trial to its study's own scheduler (ASHA, or FIFO
without early stopping), so one study's rungs never stop another study's trials; it picks
the next trial to run among the live trials only, and hands a failed trial's error text to
the searcher that records it (``tuner.sweep.multiplex``).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from tuner.sweep.multiplex import MultiStudySearcher, study_of
from tuner.sweep.recorded import FLAG


def trial_error(trial: Any) -> str:
    """A failed trial's error text (empty when it did not fail)."""
    if trial.status != Trial.ERROR and not getattr(trial, "error_file", None):
        return ""
    error = trial.get_error()
    return str(error) if error is not None else "trial failed"


class MultiStudyScheduler(FIFOScheduler):
    """One scheduler per study (``make()``: ASHA, or FIFO without early stopping), chosen by
    the trial's ``STUDY``. It is the hook that sees a failed trial itself, so it hands the
    trial's error text to the searcher, which records the trial."""

    def __init__(
        self, make: Callable[[], TrialScheduler], searcher: MultiStudySearcher | None = None
    ) -> None:
        super().__init__()
        self.make, self.searcher = make, searcher
        self.by_study: dict[str, TrialScheduler] = {}
        #: live trial id → the order it was added in (FIFO among the live trials)
        self.added: dict[str, int] = {}
        self.sequence = 0

    def __setstate__(self, state: dict[str, Any]) -> None:
        """A scheduler pickled by an older release (``Tuner.restore`` of a sweep begun before
        the live-trial order existed) comes back without ``added``/``sequence``: it starts
        them empty, so the restored trials run in the order they are added again."""
        self.__dict__.update({"added": {}, "sequence": 0, **state})

    def _of(self, trial: Any) -> TrialScheduler:
        key = study_of(trial.config)
        if key not in self.by_study:
            self.by_study[key] = self.make()
        return self.by_study[key]

    def set_search_properties(self, metric: str | None, mode: str | None, **spec: Any) -> bool:
        return True  # each study's scheduler was built with its metric and mode

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        self.added[trial.trial_id], self.sequence = self.sequence, self.sequence + 1
        self._of(trial).on_trial_add(tune_controller, trial)

    def choose_trial_to_run(self, tune_controller: Any) -> Any:
        """FIFO's choice (the first pending trial, else the first paused one, in the order
        they were added) among the live trials only. FIFO's own scans every trial of the
        experiment on each step of Ray Tune's loop, a cost that grows with the sweep."""
        live = tune_controller.get_live_trials()
        for status in (Trial.PENDING, Trial.PAUSED):
            ready = [t for t in live if t.status == status]
            if ready:
                return min(ready, key=lambda t: self.added.get(t.trial_id, -1))
        return None

    def on_trial_error(self, tune_controller: Any, trial: Any) -> None:
        text = trial_error(trial)
        if text and self.searcher is not None:
            self.searcher.trial_failed(trial.trial_id, text)
        self._of(trial).on_trial_error(tune_controller, trial)

    def on_trial_result(self, tune_controller: Any, trial: Any, result: dict) -> str:
        """A replayed trial's values reach its study's ASHA rungs, but it is never stopped:
        it ends where its recorded run ended (``tuner.sweep.recorded``)."""
        decision = self._of(trial).on_trial_result(tune_controller, trial, result)
        return TrialScheduler.CONTINUE if result.get(FLAG) else decision

    def on_trial_complete(self, tune_controller: Any, trial: Any, result: dict) -> None:
        self.added.pop(trial.trial_id, None)
        self._of(trial).on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Any) -> None:
        self.added.pop(trial.trial_id, None)
        self._of(trial).on_trial_remove(tune_controller, trial)
