"""A study's TPE searcher on Optuna's own ask-and-tell API, honest about ASHA's early stops.

Ray's ``OptunaSearch`` hands a trial that ASHA stopped to Optuna as *complete* with its
truncated score, so TPE would learn from short runs as if they were final; telling it so
needed Ray's private ``_ot_study``/``_ot_trials``. Here the Optuna study is ours: each
suggestion is ``study.ask(distributions)``, each epoch ``trial.report``, and the end one
``study.tell`` with COMPLETE (a full run; a diverged one with the 0 it reports, a real and
terrible outcome for its configuration), PRUNED (stopped early by ASHA) or FAIL (an error or
a non-finite score). Ray Tune only sees a ``Searcher``.
"""

from __future__ import annotations

import math
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from tuner.records import METRIC, trial_outcome


class TPESearcher(Searcher):
    """One study's seeded TPE (``optuna.samplers.TPESampler``) behind Ray's ``Searcher``.

    ``first``: configurations Optuna evaluates before sampling (warm start, via
    ``enqueue_trial``). The space arrives through ``set_search_properties`` as Ray Tune
    domains, converted by Ray's public ``OptunaSearch.convert_search_space``."""

    def __init__(
        self, seed: int, max_epochs: int, first: list[dict[str, Any]] | None = None
    ) -> None:
        super().__init__(metric=METRIC, mode="max")
        self.max_epochs = max_epochs
        self.study = optuna.create_study(
            direction="maximize", sampler=optuna.samplers.TPESampler(seed=seed)
        )
        for point in first or []:
            self.study.enqueue_trial(point)
        self.space: dict[str, optuna.distributions.BaseDistribution] = {}
        self.asked: dict[str, optuna.Trial] = {}
        #: How Optuna was told of each trial (trial id → state name)
        self.told: dict[str, str] = {}

    def set_search_properties(
        self, metric: str | None, mode: str | None, config: dict, **spec: Any
    ) -> bool:
        self.space = OptunaSearch.convert_search_space(config) if config else {}
        return True

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        if not self.space:
            return None
        trial = self.study.ask(self.space)
        self.asked[trial_id] = trial
        return dict(trial.params)

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        trial = self.asked.get(trial_id)
        value = result.get(METRIC)
        if trial is not None and value is not None and math.isfinite(value):
            trial.report(float(value), int(result.get("training_iteration", 0)))

    def _verdict(self, result: dict | None, error: bool) -> tuple[TrialState, float | None]:
        value = (result or {}).get(METRIC)
        outcome = trial_outcome(result, self.max_epochs)
        if error or value is None or not math.isfinite(value):
            return TrialState.FAIL, None
        if outcome == "stopped_early":
            return TrialState.PRUNED, None
        return TrialState.COMPLETE, float(value)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        trial = self.asked.pop(trial_id, None)
        if trial is None:  # told already, or never ours
            return
        state, told = self._verdict(result, error)
        self.study.tell(trial, told, state=state)
        self.told[trial_id] = state.name

    def tell_recorded(
        self,
        params: dict[str, Any],
        curve: tuple[float, ...] | list[float],
        result: dict | None,
        error: bool = False,
    ) -> None:
        """A trial that ran before a crash, replayed from its MLflow run on ``--resume``
        (``tuner.sweep.recorded``): never asked (its configuration is the recorded one), so
        Optuna gets it whole, with its per-epoch values, as an added trial."""
        state, told = self._verdict(result, error)
        epochs = int((result or {}).get("training_iteration", len(curve)))
        distributions = {k: self.space[k] for k in params if k in self.space}
        self.study.add_trial(
            optuna.trial.create_trial(
                params={k: params[k] for k in distributions},
                distributions=distributions,
                value=told,
                state=state,
                intermediate_values={
                    i + 1: float(v) for i, v in enumerate(curve[:epochs]) if math.isfinite(v)
                },
            )
        )

    def trial_states(self) -> dict[str, int]:
        """How Optuna recorded every trial: counts by state name."""
        counts: dict[str, int] = {}
        for t in self.study.get_trials(deepcopy=False):
            counts[t.state.name] = counts.get(t.state.name, 0) + 1
        return counts


def tpe_searcher(
    seed: int, max_epochs: int, first: list[dict[str, Any]] | None = None
) -> TPESearcher:
    """A seeded TPE searcher maximising ``val/acc``; ``first`` are evaluated before sampling."""
    return TPESearcher(seed, max_epochs, first)
