"""Tuning strategies replayed on a table: the project's own searcher and scheduler, no training.

Each study of the table is tuned again by each strategy with one seed at a time, one trial at
a time: the proposer is the table order (``grid``), a seeded permutation (``random``) or the
sweep's TPE (``tuner.sweep.searcher.tpe_searcher``: ``HonestOptunaSearch`` over the table's
values as choice domains, optionally warm-started); with ``asha`` the sweep's ASHA
(``tuner.sweep.shared_run.study_scheduler``) sees every epoch of the recorded curve and may stop
the trial. The searcher and scheduler are driven through the calls Ray Tune makes
(``suggest``, ``on_trial_result``, ``on_trial_complete``; ``on_trial_add``), so what is
measured is what a sweep would do, minus concurrency (trials run one after another).

A study is *hit* by the first trial that ran every epoch with a final val accuracy within
``eps`` of the grid's best; configurations and trial-epochs are counted up to and including
it. A study never hit counts its whole budget. The run stops at the hit (or after ``horizon``
trials, whichever is later, so the regret curve is exact up to ``horizon``) unless ``full``
(needed for the chosen configuration's test accuracy) or the strategy is the grid, which
knows its best only when every point has run (its cost is the whole grid, the reference of
every ratio). After a hit the incumbent curve holds the hit's value, an upper bound of the
strategy's later regret past ``horizon``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import numpy as np

from tuner.records import METRIC
from tuner.replay.prior import best_of_other_tasks, choice_space, prior_points
from tuner.replay.table import ReplayTable

#: Suggestions outside the table in a row before a study gives up (a table that is not a
#: full product of its values; a full grid never misses).
MAX_MISSES = 200


@dataclass(frozen=True)
class Strategy:
    """How one strategy tunes a study: proposer, warm start, budget, early stopping."""

    name: str
    proposer: str  # grid | random | tpe
    warm: str = ""  # "" | best (the engine's rule) | prior (tuner.replay.prior.prior_points)
    warm_top: int = 0
    budget: int | None = None  # trials per study; None: the study's configurations
    asha: bool = False


@dataclass(frozen=True)
class Asha:
    """The sweep's ASHA settings (``tune.grace_period``, ``tune.reduction_factor``)."""

    grace_period: int
    reduction_factor: int


@dataclass
class StudyRun:
    """One strategy on one study with one seed."""

    configs: int = 0  # spent up to the hit (the whole run where never hit, and for the grid)
    epochs: int = 0  # trial-epochs, counted the same way
    trials: int = 0  # run in all (past the hit up to the horizon, or the budget if full)
    trial_epochs: int = 0
    hit: bool = False
    budget: int = 0
    incumbents: list[float] = field(default_factory=list)  # best final after each trial
    epoch_marks: list[int] = field(default_factory=list)  # trial-epochs after each trial
    chosen: dict[str, Any] | None = None


@dataclass
class _Trial:
    """What ASHA reads of a trial (``trial_id``) and what a sweep's trial carries."""

    trial_id: str
    config: dict[str, Any]
    last_result: dict[str, Any] = field(default_factory=dict)


def _scheduler_factory(asha: Asha, max_epochs: int) -> Callable[[], Any]:
    """The per-study scheduler exactly as the sweep builds it, for these epochs."""
    from tuner.search_settings import TuneSettings
    from tuner.sweep.shared_run import study_scheduler

    tune = TuneSettings(
        max_epochs=max_epochs,
        grace_period=min(asha.grace_period, max_epochs),
        reduction_factor=asha.reduction_factor,
        early_stopping=True,
    )
    return study_scheduler(SimpleNamespace(tune=tune))  # it reads only cfg.tune


class _Proposer:
    """Configurations to try, through the sweep's searcher where the strategy has one."""

    def __init__(
        self,
        strategy: Strategy,
        configs: list[dict],
        values: dict,
        seed: int,
        first: list[dict],
        max_epochs: int,
    ) -> None:
        self.searcher = None
        self.queue: Iterator[dict] | None = None
        if strategy.proposer == "grid":
            self.queue = iter(configs)
        elif strategy.proposer == "random":
            order = np.random.default_rng(seed).permutation(len(configs))
            self.queue = iter([configs[i] for i in order])
        else:
            from tuner.sweep.searcher import tpe_searcher
            from tuner.sweep.study import to_ray_space

            self.searcher = tpe_searcher(seed, max_epochs, first)
            space = to_ray_space(choice_space(values), False)
            self.searcher.set_search_properties(METRIC, "max", space)

    def suggest(self, trial_id: str) -> dict | None:
        if self.queue is not None:
            return next(self.queue, None)
        return self.searcher.suggest(trial_id)

    def result(self, trial_id: str, result: dict) -> None:
        if self.searcher is not None:
            self.searcher.on_trial_result(trial_id, result)

    def complete(self, trial_id: str, result: dict | None, error: bool = False) -> None:
        if self.searcher is not None:
            self.searcher.on_trial_complete(trial_id, result, error=error)


def warm_first(
    table: ReplayTable, task: str, method: str, strategy: Strategy, eps: float
) -> list[dict]:
    """The strategy's warm-start points, from the table's other tasks only."""
    if not strategy.warm or strategy.warm_top <= 0:
        return []
    space = choice_space(table.values(task, method))
    if strategy.warm == "best":
        return best_of_other_tasks(table, task, method, space, strategy.warm_top)
    return prior_points(table, method, task, space, strategy.warm_top, eps)


def run_study(
    table: ReplayTable,
    task: str,
    method: str,
    strategy: Strategy,
    seed: int,
    eps: float,
    max_epochs: int,
    asha: Asha | None,
    full: bool = False,
    first: list[dict] | None = None,
    horizon: int = 0,
) -> StudyRun:
    """Tune one study with ``strategy`` (see the module doc for what is counted)."""
    configs = table.configs(task, method)
    finals = [table.final(task, method, c) for c in configs]
    target = max(finals) - eps - 1e-9
    budget = len(configs) if strategy.proposer == "grid" else strategy.budget or len(configs)
    full = full or strategy.proposer == "grid"  # a grid knows its best only at the end
    if first is None:
        first = warm_first(table, task, method, strategy, eps)
    proposer = _Proposer(strategy, configs, table.values(task, method), seed, first, max_epochs)
    scheduler = _scheduler_factory(asha, max_epochs)() if strategy.asha and asha else None
    np.random.seed(seed % 2**32)  # ASHA draws its bracket from numpy's global generator
    run, best_final, best_config, misses = StudyRun(budget=budget), -1.0, None, 0
    for attempt in range(budget * MAX_MISSES):
        if run.trials >= budget:
            break
        trial_id = f"{seed}_{attempt}"
        config = proposer.suggest(trial_id)
        if config is None:
            break
        if (task, method, config) not in table:
            proposer.complete(trial_id, None, error=True)
            misses += 1
            if misses >= MAX_MISSES:
                break
            continue
        misses = 0
        epochs, final = _train(
            table, task, method, config, trial_id, proposer, scheduler, max_epochs
        )
        run.trials += 1
        run.trial_epochs += epochs
        if epochs == max_epochs and final > best_final:
            best_final, best_config = final, config
        run.incumbents.append(best_final)
        run.epoch_marks.append(run.trial_epochs)
        if not run.hit and epochs == max_epochs and final >= target:
            run.hit, run.configs, run.epochs = True, run.trials, run.trial_epochs
        if run.hit and not full and run.trials >= horizon:
            break
    if not run.hit or strategy.proposer == "grid":
        run.configs, run.epochs = run.trials, run.trial_epochs
    run.chosen = best_config
    return run


def _train(
    table: ReplayTable,
    task: str,
    method: str,
    config: dict,
    trial_id: str,
    proposer: _Proposer,
    scheduler: Any,
    max_epochs: int,
) -> tuple[int, float]:
    """Replay one trial's curve epoch by epoch; returns (epochs run, last val acc)."""
    curve = table.curve(task, method, config)
    trial = _Trial(trial_id, config)
    if scheduler is None:
        result = {METRIC: curve[-1], "training_iteration": max_epochs}
        proposer.result(trial_id, result)
        proposer.complete(trial_id, result)
        return max_epochs, curve[-1]
    from ray.tune.schedulers import TrialScheduler

    scheduler.on_trial_add(None, trial)
    for epoch in range(1, max_epochs + 1):
        trial.last_result = {METRIC: curve[min(epoch, len(curve)) - 1], "training_iteration": epoch}
        decision = scheduler.on_trial_result(None, trial, trial.last_result)
        proposer.result(trial_id, trial.last_result)
        if decision == TrialScheduler.STOP or epoch == max_epochs:
            break
    scheduler.on_trial_complete(None, trial, trial.last_result)
    proposer.complete(trial_id, trial.last_result)
    return int(trial.last_result["training_iteration"]), float(trial.last_result[METRIC])
