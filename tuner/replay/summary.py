"""A comparison's figures: per seed over all studies, then mean and 95 % interval over seeds.

* ``ratio_vs_grid``: the grid's configurations (every point of every study) over the
  strategy's (up to each study's hit, or its whole budget where it never hit).
* ``trial_epochs_ratio``: the same in trial-epochs, where the table has curves (else None).
* ``hit_rate``: the share of studies hit within the strategy's budget.
* ``budget_ratio_vs_grid``: the grid's configurations over the strategy's budgets: what a
  sweep pays that runs every study's budget (it cannot know when it has hit).
* ``paid_epochs_ratio``: the grid's trial-epochs over every trial-epoch the strategy ran
  (with ``full``, its whole budget): what a sweep pays, since it cannot know when it has hit.
* ``test_tie_rate`` (tables with test accuracy): the share of studies whose chosen
  configuration ties the grid's chosen one on test: the leaderboard's paired bootstrap where
  the table has both ones' ``test_correct``, else test accuracies within eps.

An interval is the 2.5-97.5 % percentiles of 2,000 bootstrap means over seeds.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from tuner.leaderboard.stats import bootstrap_ties
from tuner.replay.compare import StudyRun
from tuner.replay.runner import Comparison
from tuner.replay.table import config_key


def interval(values: list[float], seed: int = 0) -> dict[str, float]:
    """Mean and bootstrap 95 % interval of per-seed values."""
    data = np.asarray(values, dtype=np.float64)
    if len(data) == 1:
        return {"mean": float(data[0]), "low": float(data[0]), "high": float(data[0])}
    draws = np.random.default_rng(seed).choice(data, size=(2000, len(data))).mean(axis=1)
    low, high = np.percentile(draws, [2.5, 97.5])
    return {"mean": float(data.mean()), "low": float(low), "high": float(high)}


def _grid_choice(comparison: Comparison, task: str, method: str) -> dict[str, Any]:
    table = comparison.table
    configs = table.configs(task, method)
    return max(configs, key=lambda c: table.final(task, method, c))  # first of equals


def _tie(
    comparison: Comparison, study: tuple[str, str], run: StudyRun, seen: dict[tuple, float]
) -> float:
    """Whether ``run``'s choice ties the grid's on test (``seen``: answers by choice, since
    seeds and strategies often choose the same configuration and a bootstrap is not free)."""
    if run.chosen is None:
        return math.nan
    key = (*study, config_key(run.chosen))
    if key not in seen:
        seen[key] = _tie_of(comparison, study, run.chosen)
    return seen[key]


def _tie_of(comparison: Comparison, study: tuple[str, str], chosen: dict[str, Any]) -> float:
    table, (task, method) = comparison.table, study
    choice = _grid_choice(comparison, task, method)
    ours_correct = table.test_correct(task, method, chosen)
    grid_correct = table.test_correct(task, method, choice)
    if ours_correct is not None and grid_correct is not None:
        ties = bootstrap_ties({"grid": grid_correct, "ours": ours_correct})
        return float(bool(ties["ours"]["tied"]))  # tied, or better
    ours, grid = table.test_acc(task, method, chosen), table.test_acc(task, method, choice)
    if ours is None or grid is None:
        return math.nan
    return float(abs(ours - grid) <= comparison.eps + 1e-9)


def per_seed(comparison: Comparison, name: str) -> dict[str, list[float]]:
    """Each figure's value per seed for strategy ``name``."""
    table = comparison.table
    sizes = [len(table.configs(t, m)) for t, m in comparison.studies]
    grid_configs = float(sum(sizes))
    grid_epochs = grid_configs * comparison.max_epochs
    out: dict[str, list[float]] = {
        "ratio_vs_grid": [],
        "hit_rate": [],
        "budget_ratio_vs_grid": [],
        "trial_epochs_ratio": [],
        "paid_epochs_ratio": [],
        "test_tie_rate": [],
        "configs_per_study": [],
    }
    seen: dict[tuple, float] = {}
    for runs in comparison.runs[name]:
        configs = sum(r.configs for r in runs)
        out["ratio_vs_grid"].append(grid_configs / configs)
        out["configs_per_study"].append(configs / len(runs))
        out["hit_rate"].append(sum(r.hit for r in runs) / len(runs))
        out["budget_ratio_vs_grid"].append(grid_configs / sum(r.budget for r in runs))
        out["trial_epochs_ratio"].append(grid_epochs / sum(r.epochs for r in runs))
        out["paid_epochs_ratio"].append(grid_epochs / sum(r.trial_epochs for r in runs))
        if table.has_test:
            ties = [
                _tie(comparison, s, r, seen) for s, r in zip(comparison.studies, runs, strict=True)
            ]
            out["test_tie_rate"].append(float(np.nanmean(ties)) if ties else math.nan)
    return out


def summarise(comparison: Comparison) -> dict[str, Any]:
    """The ``--json`` document: eps, studies and, per strategy, every figure's mean and
    interval (``<figure>`` is the mean, ``<figure>_ci`` the [low, high] interval)."""
    strategies: dict[str, Any] = {}
    for strategy in comparison.strategies:
        values = per_seed(comparison, strategy.name)
        entry: dict[str, Any] = {
            "budget": strategy.budget,
            "warm": f"{strategy.warm}:{strategy.warm_top}" if strategy.warm else None,
            "asha": strategy.asha,
        }
        for figure, series in values.items():
            curves_only = figure in ("trial_epochs_ratio", "paid_epochs_ratio")
            if not series or (curves_only and not comparison.table.has_curves):
                entry[figure], entry[f"{figure}_ci"] = None, None
                continue
            stats = interval(series)
            entry[figure] = stats["mean"]
            entry[f"{figure}_ci"] = [stats["low"], stats["high"]]
        strategies[strategy.name] = entry
    return {
        "table": comparison.table.source,
        "eps": comparison.eps,
        "studies": len(comparison.studies),
        "seeds": len(comparison.seeds),
        "max_epochs": comparison.max_epochs,
        "strategies": strategies,
    }


def regret_curves(comparison: Comparison, name: str, horizon: int) -> np.ndarray:
    """Normalised regret (best − incumbent) / (best − worst), mean over studies, for
    configurations 1..horizon: an array of shape (seeds, horizon)."""
    table = comparison.table
    bounds = []
    for task, method in comparison.studies:
        finals = [table.final(task, method, c) for c in table.configs(task, method)]
        bounds.append((max(finals), min(finals)))
    out = np.zeros((len(comparison.seeds), horizon))
    for s, runs in enumerate(comparison.runs[name]):
        for (best, worst), run in zip(bounds, runs, strict=True):
            inc = np.full(horizon, worst)
            seen = np.maximum(np.asarray(run.incumbents[:horizon], dtype=np.float64), worst)
            inc[: len(seen)] = seen
            if len(seen):
                inc[len(seen) :] = seen[-1]  # the run stopped (hit or budget): it holds
            out[s] += (best - inc) / (best - worst) if best > worst else 0.0
        out[s] /= len(runs)
    return out
